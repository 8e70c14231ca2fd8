"""The bounds on what reaches a participant: every message and stored failure reason at most
500 characters."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_helpers import make_hidden_test, runner_or_skip

from scorer.codabench import host_line
from scorer.errors import MESSAGE_LIMIT, HostError, ParticipantError, examples, shorten
from scorer.formats import read_predictions
from scorer.harness import bwrap_runner
from scorer.harness.evaluate import Submission, evaluate
from scorer.harness.sandbox import Limits, MiB
from scorer.leaderboard.store import Entry, open_store
from scorer.settings import Settings

HAND = "MURA-v1.1/test/XR_HAND/patient00001"


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_shorten_keeps_the_start_and_the_end_and_examples_at_most_five_short_ones():
    text = "expected this; " + "x" * 10_000 + "; do that"
    short = shorten(text)
    assert len(short) == MESSAGE_LIMIT and short.startswith("expected this; ") and short.endswith("; do that")
    assert short.count("…") == 1 and shorten("short") == "short"
    listed = examples(["y" * 1000] * 7 + ["z"])
    assert listed.endswith(" and 3 more") and listed.count("…") == 5 and len(listed) < 5 * 82 + 12


def test_every_scoring_error_line_is_at_most_500_characters_and_one_line():
    for error in (ParticipantError, HostError):
        line = error("expected x;\n" + "y " * 1_000_000 + "; do z").line()
        assert len(line) <= MESSAGE_LIMIT and "\n" not in line and line.endswith("; do z")
    # Codabench shows the organiser's error after a long preamble: the whole line fits too.
    line = host_line(HostError("gold file: " + "v" * 10_000 + "; fix it"))
    assert len(line) <= MESSAGE_LIMIT and line.endswith("; fix it")


def test_duplicates_list_a_few_lines_of_a_few_studies(tmp_path):
    """100,000 rows over 200 studies used to give an 18 KB message listing every line."""
    from scorer.validate import align

    studies = [f"{HAND}/study{i}/" for i in range(200)]
    path = write(tmp_path / "f.csv", "".join(f"{studies[i % 200]},1\n" for i in range(100_000)))
    with pytest.raises(ParticipantError) as caught:
        align(read_predictions(path), studies)
    line = caught.value.line()
    assert len(line) <= MESSAGE_LIMIT
    assert f"{HAND}/study0/ (lines 1, 201, 401 and 497 more), " in line
    assert f"{HAND}/study2/ (lines 3, 203, 403 and 497 more) and 197 more; keep one row" in line


def test_the_store_keeps_a_failure_reason_of_at_most_500_characters(tmp_path):
    reason = "exit code 1; last lines of the log: " + "x" * 3_000_000
    with open_store(tmp_path / "board.sqlite") as store:
        sid, added = store.add_failure(reason, Entry("bob"))
        [(kept,)] = store.query("SELECT reason FROM submissions WHERE id = ?", (sid,))
        assert added and len(kept) == MESSAGE_LIMIT and kept.startswith("exit code 1; last lines")
        assert store.add_failure(reason, Entry("bob")) == (sid, False)  # the same failure


ANSWER = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "images = [l for l in Path(sys.argv[1]).read_text().splitlines() if l]\n"
    "studies = dict.fromkeys(i.rpartition('/')[0] + '/' for i in images)\n"
    "Path(sys.argv[2]).write_text(''.join(f'{s},1\\n' for s in studies))\n"
)
LIMITS = Limits(timeout=60, memory=512 * MiB, pids=64, log_cap=16 * 1024)
SETTINGS = Settings(resamples=50)


@pytest.mark.required_in_ci
def test_the_harness_records_at_most_500_characters_of_a_reason(tmp_path):
    """Here the scorer's message for an invalid probabilities.csv, behind the harness's prefix."""
    test_dir, gold, _ = make_hidden_test(tmp_path / "hidden", n=14)
    code = ANSWER + (
        "Path(os.environ['MURA_PROBABILITIES']).write_text(''.join("
        "f'elsewhere/{\"x\" * 300}/{i}/,0.5\\n' for i in range(20)))\n"
    )
    db = tmp_path / "board.sqlite"
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "predict.py").write_text(code)
    runner = runner_or_skip("bwrap" if bwrap_runner.unavailable_reason() is None else "docker")
    entry = Submission(folder, "l")
    verdict = evaluate(entry, test_dir, gold, tmp_path / "run", runner, LIMITS, SETTINGS, db=db)
    assert verdict.reason.startswith("/output/probabilities.csv (optional, but invalid): probabilities file")
    assert len(verdict.reason) <= MESSAGE_LIMIT and "…" in verdict.reason
    with open_store(db) as store:
        [(kept,)] = store.query("SELECT reason FROM submissions")
    assert kept == verdict.reason
