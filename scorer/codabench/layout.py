"""The Codabench competition's leaderboard and fact sheet: what `mura codabench bundle` writes
into competition.yaml and what `mura leaderboard import-codabench` reads back from Codabench's
results export (columns are exported by title, fact sheet answers by key)."""

from __future__ import annotations

from dataclasses import dataclass

from scorer.paths import GROUPS

PARTS = ("Mean", "Lower", "Upper")  # the official score keys' suffixes: kappa and its interval
LEADERBOARD = {"title": "Results", "key": "main"}
# Every scored submission goes on the board (MURA's table kept every entry).
SUBMISSION_RULE = "Force_Latest_Multiple"
PRECISION = 3
# The phases `mura codabench bundle` writes; the import reads the test phase's board by default.
DEV, TEST = "Development", "Test"


@dataclass(frozen=True)
class Column:
    key: str  # a key of the scoring program's scores.json
    title: str  # at most 36 characters (Codabench's Column.title); no "-": the export joins with it
    hidden: bool


def column(group: str, part: str) -> Column:
    suffix = {"Mean": "", "Lower": " lower", "Upper": " upper"}[part]
    return Column(f"{group}_{part}", f"{group} kappa{suffix}", hidden=part != "Mean")


# Overall_Mean first (Codabench ranks by the column at index 0), then each study type's kappa,
# then the interval bounds as hidden columns (kept with every score, shown in detailed results).
COLUMNS: tuple[Column, ...] = (
    *(column(group, "Mean") for group in GROUPS),
    *(column(group, part) for group in GROUPS for part in PARTS[1:]),
)


def leaderboard() -> dict:
    """competition.yaml's `leaderboards` entry (the v2 unpacker reads the plural key)."""
    return {
        "index": 0,
        **LEADERBOARD,
        "submission_rule": SUBMISSION_RULE,
        "columns": [
            {
                "index": index,
                "title": c.title,
                "key": c.key,
                "sorting": "desc",
                "precision": PRECISION,
                "hidden": c.hidden,
            }
            for index, c in enumerate(COLUMNS)
        ],
    }


# The questions each submission answers; Codabench checks exactly these six fields per question
# and compares "is_on_leaderboard" with the string "true".
FACT_SHEET_QUESTIONS = {
    "model": ("Model name", "true"),
    "institution": ("Institution", "false"),
    "link": ("Link to a paper or code (http:// or https://)", "false"),
}
FACT_SHEET = {
    key: {
        "key": key,
        "type": "text",
        "title": title,
        "selection": "",
        "is_required": required,
        "is_on_leaderboard": "true",
    }
    for key, (title, required) in FACT_SHEET_QUESTIONS.items()
}
