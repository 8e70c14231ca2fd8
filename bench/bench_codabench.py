"""Benchmark `mura codabench bundle` on the demo's data: the whole command as a process, wall clock.

The data is what `make demo` makes (`mura synth` with demo/run.py's "small" sizes: 600 test and
80 validation studies at 96 px, six radiologists, strata); the bundle has both phases (--valid),
the strata, and is written once with the images in the zip and once with --data-on-worker.
Target: under 30 s. There is no baseline: no other tool writes a Codabench competition.

Run: .venv/bin/python bench/bench_codabench.py [--repeat 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demo"))

from run import MURA, SIZES, make_data  # noqa: E402  (demo/run.py: the demo's data and sizes)


def mura(*args: object) -> float:
    """Run `mura ARGS` as a whole process; its wall-clock seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mura", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"mura {args[0]} failed: {proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, help="A demo data folder to reuse (demo-output/data).")
    args = parser.parse_args()
    size = SIZES["small"]
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        if args.data is None:
            make_data(data, size)  # the demo's own step: what `make demo` makes
        tree = data / MURA
        images = len((tree / "test_image_paths.csv").read_text().splitlines()) + len(
            (tree / "valid_image_paths.csv").read_text().splitlines()
        )
        common = [
            "--test",
            data,
            "--gold",
            tree / "test_radiologists.csv",
            "--strata",
            tree / "test_strata.csv",
            "--valid",
            data,
            "--valid-gold",
            tree / "valid_labeled_studies.csv",
            "--start",
            "2026-03-01",
            "--test-start",
            "2026-04-01",
            "--resamples",
            size["resamples"],
        ]
        for label, extra in (("images in the zip", []), ("--data-on-worker", ["--data-on-worker"])):
            times = [
                mura("codabench", "bundle", *common, *extra, "--out", Path(tmp) / f"c{label[0]}{i}.zip")
                for i in range(args.repeat)
            ]
            zipped = (Path(tmp) / f"c{label[0]}0.zip").stat().st_size / 1e6
            print(
                f"mura codabench bundle, {label}: {size['test']} + {size['valid']} studies, "
                f"{images:,} images, {zipped:.1f} MB zip: median {statistics.median(times):.2f} s "
                f"of {args.repeat} ({', '.join(f'{t:.2f}' for t in times)}); target < 30 s"
            )
    flags = set(Path("/proc/cpuinfo").read_text().split()) & {"amx_tile", "avx512_bf16", "avx2"}
    print(
        f"CPU flags: {', '.join(sorted(flags)) or 'none of amx_tile, avx512_bf16, avx2'}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
