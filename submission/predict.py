#!/usr/bin/env python3
"""The submission contract (SPEC §3): `python predict.py input.csv output.csv`.

Run from the submission's root (or from anywhere: paths are relative to the working
directory, as CodaLab runs it). The ensemble bundle defaults to `bundle/` beside this file;
`--bundle DIR` or the environment variable MURA_BUNDLE overrides it. `--probabilities FILE`
(or MURA_PROBABILITIES) also writes each study's probability, for AUC. `--help` lists the rest.

Exit codes: 0 an answer was written; 2 no answer (unreadable input CSV, broken bundle, bad
option or device, an output path that cannot be written), with the reason on stderr and no
output file (with --probabilities: both files or neither). The command is `mura predict`'s
(reference_model.cli); the work happens in reference_model.infer.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    try:
        from reference_model.cli import predict
    except ImportError:
        # A checkout of the kit: the package lives beside submission/.
        sys.path.insert(0, str(HERE.parent))
        try:
            from reference_model.cli import predict
        except ImportError as exc:
            print(
                f"predict.py: error: the MURA kit is not importable ({exc}); expected it installed "
                "in this image; install it with: pip install 'mura-kit[model]'",
                file=sys.stderr,
            )
            sys.exit(2)
    os.environ.setdefault("MURA_BUNDLE", str(HERE / "bundle"))
    predict.main(prog_name="predict.py")


if __name__ == "__main__":
    main()
