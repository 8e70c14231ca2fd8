"""A scoring program for Codabench and CodaLab Competitions.

Run as `python -m scorer.codabench INPUT OUTPUT` (the platforms call `<program> <input>
<output>`): INPUT/ref/ holds the organisers' gold file, INPUT/res/ the submission's
predictions. Writes OUTPUT/scores.json (and scores.txt, `key: value` lines, for CodaLab
Competitions v1) with the official MURA keys, and OUTPUT/detailed_results.html: the
participants' view of the report (report.participant_html), since participants can read it.

Options, all optional, come from INPUT/ref/scoring.json (CONFIG_FORM): gold_raters as a list
or as "Rad1,Rad4,Rad5", seed and resamples; what it leaves out is as for `mura score`.

A failure exits non-zero; the last line on stderr is what the participant sees, so it says
what to fix, and never shows gold labels: a submission's error says what to change; the
organisers' (a broken gold file or scoring.json) says only that their reference data is
invalid, with a detail that names lines and columns, never a label or a vote. On Codabench a
failed prediction step does not fail the submission by itself: the kit's ingestion program
leaves its last line in INPUT/res/ingestion_failed.txt, and this program ends with that line.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from scorer.errors import (
    MESSAGE_LIMIT,
    HostError,
    ParticipantError,
    ScoringError,
    hide_labels,
    notes_on_stderr,
    shorten,
)
from scorer.files import read_file, write_together
from scorer.settings import DEFAULTS, Settings, rater_names

GOLD_NAMES = ("test.csv", "gold.csv", "valid_labeled_studies.csv")
PREDICTION_NAMES = ("output.csv", "predictions.csv")
CONFIG = "scoring.json"
CONFIG_FORM = (
    f'{{"gold_raters": ["Rad1", "Rad4", "Rad5"], "seed": {DEFAULTS.seed}, "resamples": {DEFAULTS.resamples}}}'
)
OUTPUTS = ("scores.json", "scores.txt", "detailed_results.html")
# Written into res/ by the ingestion program (scorer.codabench.ingestion) while it runs and when
# it fails: the line it ended with. Codabench scores even when the prediction step failed.
INGESTION_FAILED = "ingestion_failed.txt"


def _pick(folder: Path, preferred: tuple[str, ...], error: type[ScoringError], what: str) -> Path:
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.glob("*.csv") if p.is_file()) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    wanted = " or ".join(preferred)
    listing = ", ".join(p.name for p in found) or "no CSV file"
    nested = sorted(folder.glob("*/*.csv")) if not found and folder.is_dir() else []
    hint = (
        f" (but {nested[0].relative_to(folder)} in a folder: zip the file itself, not its folder)"
        if nested
        else ""
    )
    raise error(
        f"expected the {what} in {folder.name}/ as {wanted} (or a single .csv), found {listing}{hint}"
    )


def _settings(ref: Path) -> Settings:
    config = ref / CONFIG
    source = f"ref/{CONFIG}"
    if not config.exists():
        return Settings(source=source)
    try:
        data = json.loads(read_file(config, "settings file", "a JSON file").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HostError(f"{source} is not valid JSON ({exc}); expected {CONFIG_FORM}") from None
    if not isinstance(data, dict):
        raise HostError(f"{source} holds a {type(data).__name__}; expected an object, {CONFIG_FORM}")
    unknown = sorted(set(data) - {"gold_raters", "seed", "resamples"})
    if unknown:
        raise HostError(f"{source} has unknown fields {', '.join(unknown)}; expected {CONFIG_FORM}")

    raters = data.get("gold_raters")
    if isinstance(raters, str):
        names = rater_names(raters)
    elif raters is None or (isinstance(raters, list) and all(isinstance(r, str) for r in raters)):
        names = tuple(r.strip() for r in raters or () if r.strip()) or None
    else:
        raise HostError(
            f'{source} field "gold_raters": expected a list of rater names (["Rad1", "Rad4", '
            f'"Rad5"]) or one comma-separated string, found {json.dumps(raters)}'
        )

    def integer(name: str, default: int) -> int:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise HostError(f'{source} field "{name}": expected an integer, found {json.dumps(value)}')
        return value

    return Settings(
        names, integer("seed", DEFAULTS.seed), integer("resamples", DEFAULTS.resamples), source=source
    )


def official_scores(result: dict) -> dict[str, float]:
    """The official keys with a number (platform leaderboards take numbers only; an undefined
    kappa is left out and explained in detailed_results.html)."""
    return {
        k: v for k, v in result.items() if k.endswith(("_Mean", "_Lower", "_Upper")) and isinstance(v, float)
    }


def _output_folder(output_dir: Path) -> None:
    """OUTPUT must be a folder we can write (made if missing): checked before scoring."""
    if output_dir.exists() and not output_dir.is_dir():
        raise HostError(f"OUTPUT {output_dir} is a file; expected a folder for {', '.join(OUTPUTS)}")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HostError(f"OUTPUT {output_dir} cannot be created ({exc.strerror})") from None


def ingestion_failure(res: Path) -> ScoringError | None:
    """The failure the ingestion program left in res/ (its last line, read back as the error it
    was), if any. A submission can only make itself fail with such a file."""
    marker = res / INGESTION_FAILED
    if marker.is_symlink() or not marker.is_file():
        return None
    line = " ".join(marker.read_bytes()[:2000].decode("utf-8", "replace").split()) or "no reason"
    for kind in (ParticipantError, HostError, ScoringError):
        if line.startswith(f"{kind.prefix}: "):
            return kind(line.removeprefix(f"{kind.prefix}: "))
    return ScoringError(line)


def run(input_dir: Path, output_dir: Path) -> None:
    from scorer import report
    from scorer.pipeline import score_files

    ref, res = input_dir / "ref", input_dir / "res"
    failed = ingestion_failure(res)
    if failed is not None:
        raise failed
    gold = _pick(ref, GOLD_NAMES, HostError, "gold file")
    settings = _settings(ref)
    _output_folder(output_dir)
    predictions = _pick(res, PREDICTION_NAMES, ParticipantError, "predictions file")
    if not predictions.resolve().is_relative_to(res.resolve()):
        # A link in a result zip (output.csv -> ../ref/test.csv) would score the gold itself.
        raise ParticipantError(
            f"the predictions file res/{predictions.name} is a link to a file outside the "
            "submission; expected a regular file inside res/: upload the CSV itself"
        )
    result = score_files(gold, predictions, settings)
    # Only aggregate scores leave the scorer: no per-study rows and no file names from ref/.
    result.pop("inputs", None)
    scores = official_scores(result)
    texts = {
        "scores.json": json.dumps(scores, indent=2) + "\n",
        "scores.txt": "".join(f"{k}: {v}\n" for k, v in scores.items()),
        "detailed_results.html": report.participant_html(result),
    }
    try:
        write_together({output_dir / name: text for name, text in texts.items()})
    except OSError as exc:
        raise HostError(
            f"OUTPUT {output_dir}: {', '.join(texts)} cannot be written ({exc.strerror or exc})"
        ) from None


def host_line(exc: HostError) -> str:
    """The participant-visible line for the organisers' error: whose fault it is, then the
    detail (HostError messages carry no labels or votes), shortened to keep the line short."""
    intro = (
        f"{exc.prefix}: the organisers' reference data or scoring set-up is invalid (your "
        "submission was not scored; the organisers must fix this): "
    )
    return intro + shorten(exc.message, MESSAGE_LIMIT - len(intro))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("organiser error: usage: python -m scorer.codabench INPUT OUTPUT", file=sys.stderr)
        return 3
    try:
        with notes_on_stderr():  # a BOM or CRLF in the predictions: read, and said so
            run(Path(argv[0]), Path(argv[1]))
    except HostError as exc:
        print(host_line(exc), file=sys.stderr)
        return exc.exit_code
    except ScoringError as exc:
        print(exc.line(), file=sys.stderr)
        return exc.exit_code
    except Exception:  # a bug: the organisers need the traceback, participants read it too
        print(hide_labels(traceback.format_exc()), file=sys.stderr, end="")
        print("error: the scoring program failed (a bug in the scorer, not your submission)", file=sys.stderr)
        return 1
    return 0
