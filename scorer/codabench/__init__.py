"""A scoring program for Codabench and CodaLab Competitions.

Run as `python -m scorer.codabench INPUT OUTPUT` (the platforms call `<program> <input>
<output>`): INPUT/ref/ holds the organisers' gold file, INPUT/res/ the submission's
predictions. Writes OUTPUT/scores.json (and scores.txt, `key: value` lines, for CodaLab
Competitions v1) with the official MURA keys, and OUTPUT/detailed_results.html.

Options, all optional, come from INPUT/ref/scoring.json: {"gold_raters": ["Rad1", "Rad4",
"Rad5"], "seed": 0, "resamples": 10000}.

A failure exits non-zero; the last line on stderr is what the participant sees, so it says
what to fix, and never shows gold labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scorer.errors import HostError, ParticipantError, ScoringError

GOLD_NAMES = ("test.csv", "gold.csv", "valid_labeled_studies.csv")
PREDICTION_NAMES = ("output.csv", "predictions.csv")


def _pick(folder: Path, preferred: tuple[str, ...], error: type[ScoringError], what: str) -> Path:
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.glob("*.csv") if p.is_file()) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    wanted = " or ".join(preferred)
    listing = ", ".join(p.name for p in found) or "no CSV file"
    raise error(f"expected the {what} in {folder.name}/ as {wanted} (or a single .csv), found {listing}")


def _settings(ref: Path):  # -> Settings
    from scorer.settings import Settings

    config = ref / "scoring.json"
    if not config.is_file():
        return Settings()
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        raters = data.get("gold_raters")
        return Settings(
            gold_raters=tuple(raters) if raters else None,
            seed=int(data.get("seed", 0)),
            resamples=int(data.get("resamples", 10_000)),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise HostError(
            f"ref/scoring.json is not valid ({exc}); expected "
            '{"gold_raters": [...], "seed": 0, "resamples": 10000}'
        ) from None


def official_scores(result: dict) -> dict[str, float]:
    """The official keys with a number (platform leaderboards take numbers only; an undefined
    kappa is left out and explained in detailed_results.html)."""
    return {
        k: v for k, v in result.items() if k.endswith(("_Mean", "_Lower", "_Upper")) and isinstance(v, float)
    }


def run(input_dir: Path, output_dir: Path) -> None:
    from scorer import report
    from scorer.pipeline import score_files

    ref, res = input_dir / "ref", input_dir / "res"
    gold = _pick(ref, GOLD_NAMES, HostError, "gold file")
    predictions = _pick(res, PREDICTION_NAMES, ParticipantError, "predictions file")
    result = score_files(gold, predictions, _settings(ref))
    # Only aggregate scores leave the scorer: no per-study rows and no file names from ref/.
    result.pop("inputs", None)
    output_dir.mkdir(parents=True, exist_ok=True)
    scores = official_scores(result)
    (output_dir / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    (output_dir / "scores.txt").write_text("".join(f"{k}: {v}\n" for k, v in scores.items()))
    (output_dir / "detailed_results.html").write_text(report.to_html(result, "MURA: detailed results"))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("organiser error: usage: python -m scorer.codabench INPUT OUTPUT", file=sys.stderr)
        return 3
    try:
        run(Path(argv[0]), Path(argv[1]))
    except ScoringError as exc:
        print(exc.line(), file=sys.stderr)
        return exc.exit_code
    return 0
