"""`mura leaderboard import-codabench`: a Codabench results export (the shape of
/api/competitions/<id>/results.json, written here from the bundle's own columns and fact sheet)
into the store, under import-codalab's rules, and the MURA table rendered from it."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import yaml
from codabench_helpers import make_bundle
from harness_helpers import make_hidden_test
from leaderboard_helpers import assert_host_error, mura, score_result, write_json

from scorer.leaderboard.store import open_store

BOARD = "Results - Test(41)"
TASK = "MURA test set(87)"


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """The leaderboard columns and fact sheet of a bundle `mura codabench bundle` wrote."""
    root = tmp_path_factory.mktemp("codabench-layout")
    test_dir, gold, _ = make_hidden_test(root / "data", n=7)
    make_bundle(root / "c.zip", test_dir, gold)
    import zipfile

    with zipfile.ZipFile(root / "c.zip") as archive:
        spec = yaml.safe_load(archive.read("competition.yaml"))
    return spec["leaderboards"][0]["columns"], spec["fact_sheet"]


def exported(layout, result: dict | None, answers: dict | None) -> dict:
    """One submission as the export holds it: every column by `<task>(<id>)-<title>`, its score as
    Codabench's decimal text ("" without a score), and the fact sheet answers."""
    columns, sheet = layout
    item = {"fact_sheet_answers": answers} if answers else {}
    for column in columns:
        value = None if result is None else result.get(column["key"])
        text = "" if value is None else str(Decimal(value).quantize(Decimal("1e-10")))  # Decimal(20, 10)
        item[f"{TASK}-{column['title']}"] = text
    assert answers is None or set(answers) <= set(sheet)
    return item


DATES = {
    "101": "2026-03-02T10:00:00.123456Z",
    "102": "2026-03-05T09:30:00Z",
    "103": "2026-03-04T08:00:00+02:00",
    "104": "2026-03-06T00:00:00Z",
    "105": "2026-03-07T00:00:00Z",
    "106": "2026-03-08T00:00:00Z",
}


@pytest.fixture(scope="module")
def export(layout, tmp_path_factory):
    folder = tmp_path_factory.mktemp("codabench-export")
    results = [score_result(folder, accuracy, seed) for accuracy, seed in [(0.95, 1), (0.9, 2), (0.85, 3)]]
    board = {
        "alice-101": exported(
            layout,
            results[0],
            {"model": "dense-x3", "institution": "Uni A", "link": "https://example.org/x3"},
        ),
        "bob-smith-102": exported(layout, results[1], {"model": "", "institution": "", "link": ""}),
        "carol-103": exported(layout, results[2], {"model": "tiny (v2)", "institution": "Lab C"}),
        "dave-104": exported(layout, results[0], {"model": "m", "link": "example.org/no-scheme"}),
        "erin-105": exported(layout, {**results[0], "Overall_Mean": None}, {"model": "undefined"}),
        "frank-106": {**exported(layout, results[1], {"model": "f"}), f"{TASK}-Overall kappa": "0.8x"},
    }
    path = write_json(folder / "results.json", {BOARD: board})
    submissions = folder / "submissions.csv"
    with submissions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phase_name", "id", "owner", "created_when", "status"])
        writer.writerows(["Test", sid, "x", when, "Finished"] for sid, when in DATES.items())
    return path, submissions, results


def test_an_import_records_the_kappas_and_the_fact_sheet_and_reports_the_rest(tmp_path, export):
    path, submissions, results = export
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codabench", path, "--submissions", submissions, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"imported 4 entries of 'Results - Test(41)' from {path} into {db}: 4 new, 0 already there; "
        "2 skipped (listed on stderr)\n"
    )
    assert [line.removeprefix(f"{path}: ") for line in proc.stderr.splitlines()] == [
        "leaderboard[3] (user 'dave'): dave-104: fact_sheet_answers.link: link: expected an http:// or "
        "https:// address without spaces, found 'example.org/no-scheme'; skipped",
        "leaderboard[5] (user 'frank'): frank-106: Overall_Mean: expected a number, found '0.8x'; skipped",
    ]
    with open_store(db) as store:
        rows = store.query(
            "SELECT submitter, model, institution, link, submitted, kappa, kappa_lower, wrist_upper "
            "FROM submissions ORDER BY id"
        )
    assert [r[:5] for r in rows] == [
        ("alice", "dense-x3", "Uni A", "https://example.org/x3", "2026-03-02T10:00:00Z"),
        ("bob-smith", None, None, None, "2026-03-05T09:30:00Z"),  # an owner with a "-" in the name
        ("carol", "tiny (v2)", "Lab C", None, "2026-03-04T06:00:00Z"),
        ("erin", "undefined", None, None, "2026-03-07T00:00:00Z"),
    ]
    for row, result in zip(rows, [results[0], results[1], results[2]]):
        assert row[5:] == pytest.approx(
            (result["Overall_Mean"], result["Overall_Lower"], result["Wrist_Upper"]), abs=1e-10
        )
    assert rows[3][5] is None  # no Overall score (undefined kappa): recorded, left off as invalid

    again = mura("leaderboard", "import-codabench", path, "--db", db)  # now without the dates
    assert again.returncode == 0 and "0 new, 4 already there" in again.stdout


def test_render_makes_the_mura_table_of_the_codabench_competition(tmp_path, export):
    path, submissions, results = export
    db = tmp_path / "lb.sqlite"
    imported = mura("leaderboard", "import-codabench", path, "--submissions", submissions, "--db", db)
    assert imported.returncode == 0, imported.stderr
    proc = mura("leaderboard", "render", "--db", db)
    assert proc.returncode == 0, proc.stderr

    def day(sid: str) -> str:
        when = datetime.fromisoformat(DATES[sid].replace("Z", "+00:00")).astimezone(timezone.utc)
        return when.strftime("%b %d, %Y")

    cells = [  # kappa, date, Model cell
        (results[0]["Overall_Mean"], day("101"), "dense-x3 (Uni A) <https://example.org/x3>"),
        (results[1]["Overall_Mean"], day("102"), "bob-smith"),
        (results[2]["Overall_Mean"], day("103"), "tiny (v2) (Lab C)"),
    ]
    cells.sort(key=lambda cell: -cell[0])
    expected = [f"| {i} | {day} | {model} | {kappa:.3f} |" for i, (kappa, day, model) in enumerate(cells, 1)]
    assert proc.stdout.splitlines()[2:] == expected
    assert "left off: 1 with an invalid kappa" in proc.stderr


def test_strict_and_without_dates(tmp_path, export):
    path, _, _ = export
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codabench", path, "--strict", "--db", db)
    assert proc.returncode == 3 and len(proc.stderr.splitlines()) == 3  # the two entries, then why
    assert proc.stderr.splitlines()[-1] == (
        f"organiser error: 2 entries of {path} cannot be read (listed above); nothing recorded"
    )
    assert not db.exists()
    proc = mura("leaderboard", "import-codabench", path, "--db", db)
    assert proc.returncode == 0 and "dated today (give --submissions for their dates)" in proc.stdout


@pytest.mark.parametrize(
    "document, needle",
    [
        ([1, 2], "expected a JSON object with one leaderboard per phase"),
        ({"Results": {}}, "'Results': expected \"<leaderboard> - <phase>(<phase id>)\""),
        ({"Results - Dev(1)": {}, "Results - Final(2)": {}}, "no leaderboard of the phase 'Test'"),
        ({BOARD: {"a-1": {f"{TASK}-Accuracy": "0.5"}}}, "has none of the columns `mura codabench bundle`"),
    ],
    ids=["not an object", "title", "phase", "columns"],
)
def test_a_malformed_export_is_an_organiser_error_naming_the_field(tmp_path, document, needle):
    path = write_json(tmp_path / "results.json", document)
    assert_host_error(mura("leaderboard", "import-codabench", path, "--db", tmp_path / "lb.sqlite"), needle)
    assert not (tmp_path / "lb.sqlite").exists()


def test_a_phase_is_chosen_by_name_and_a_bad_submissions_export_names_its_column(tmp_path, layout, export):
    _, _, results = export
    document = {
        "Results - Development(40)": {"alice-99": exported(layout, results[1], {"model": "dev"})},
        BOARD: {"alice-101": exported(layout, results[0], {"model": "test"})},
    }
    path = write_json(tmp_path / "results.json", document)
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codabench", path, "--phase", "Development", "--db", db)
    assert proc.returncode == 0 and "'Results - Development(40)'" in proc.stdout
    with open_store(db) as store:
        assert store.query("SELECT model FROM submissions") == [("dev",)]
    bad = tmp_path / "submissions.csv"
    bad.write_text("id,created\n101,2026-01-01\n")
    assert_host_error(
        mura("leaderboard", "import-codabench", path, "--submissions", bad, "--db", db),
        "expected the columns id and created_when",
    )
