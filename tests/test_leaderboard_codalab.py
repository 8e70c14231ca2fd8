"""Importing a CodaLab Worksheets competition dump: description parsing, entries that cannot be
read, and the table regenerated from the import."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from leaderboard_helpers import assert_host_error, mura, score_result, write_json

from scorer.leaderboard.codalab import Description, DescriptionError, parse_description
from scorer.leaderboard.store import open_store

GROUPS = ["Overall", "Elbow", "Finger", "Forearm", "Hand", "Humerus", "Shoulder", "Wrist"]


@pytest.mark.parametrize(
    "text, expected",
    [
        # The real dump's shape, and the SPEC's: the model name may hold parentheses itself.
        (
            "base-comb2-xuan-v3(ensemble)(jzhang Availink)",
            ("base-comb2-xuan-v3(ensemble)", "jzhang Availink", None),
        ),
        (
            "base-comb2-xuan-v3(ensemble) (jzhang Availink) http://example.org/x?y=1",
            ("base-comb2-xuan-v3(ensemble)", "jzhang Availink", "http://example.org/x?y=1"),
        ),
        (
            "Stanford Baseline (ensemble) (Stanford University) https://arxiv.org/abs/1712.06957",
            ("Stanford Baseline (ensemble)", "Stanford University", "https://arxiv.org/abs/1712.06957"),
        ),
        ("DenseNet_144 () http://www.rology.net/", ("DenseNet_144", None, "http://www.rology.net/")),
        ("model (inst)http://x.org", ("model", "inst", "http://x.org")),
        ("(SCU_MILAB)", (None, "SCU_MILAB", None)),
        ("he_j", ("he_j", None, None)),  # no parentheses: all of it is the model name
        ("single model http://a.b/c", ("single model", None, "http://a.b/c")),
        ("http://only.a/link", (None, None, "http://only.a/link")),
        ("  multi   spaces\n(an  inst)  ", ("multi spaces", "an inst", None)),
        ("", (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_descriptions_are_split_like_the_mura_page(text, expected):
    assert parse_description(text) == Description(*expected)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("model (inst", "never closed"),
        ("model (inst) extra words", "unexpected text 'extra words' after the institution's ')'"),
        ("model inst)", "a ')' without a '('"),
        ("m (a (b))", "nested parentheses"),
        ("m (a) (b) c http://x.y", "unexpected text 'c'"),
    ],
)
def test_descriptions_that_cannot_be_split_say_why(text, needle):
    with pytest.raises(DescriptionError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_description(text)


def codalab_scores(result: dict) -> dict:
    return {
        f"{g.lower()}_{p.lower()}": result[f"{g}_{p}"] for g in GROUPS for p in ("Mean", "Lower", "Upper")
    }


def item(user, description, created, scores, ran=None) -> dict:
    entry = {
        "submission": {"user_name": user, "description": description, "created": created, "public": True},
        "scores": scores,
    }
    if ran is not None:
        entry["bundle"] = {"metadata": {"created": ran, "run_status": "Finished"}, "uuid": "0x12"}
    return entry


NOV_30_2018 = 1543607292  # 2018-11-30T19:48:12Z, the MURA dump's first entry


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dump")
    results = [score_result(folder, accuracy, seed) for accuracy, seed in [(0.95, 1), (0.9, 2), (0.85, 3)]]
    s = [codalab_scores(r) for r in results]
    first = "base-comb2-xuan-v3(ensemble)(jzhang Availink)"
    good = [
        item("turbobits", first, NOV_30_2018, s[0], NOV_30_2018 + 600),
        item(
            "maxentropy",
            "Stanford Baseline (ensemble) (Stanford University) https://arxiv.org/abs/1712.06957",
            NOV_30_2018 - 86400 * 30,
            s[1],
        ),
        item("he_j", "", NOV_30_2018 - 86400 * 60, s[2]),
        item("same_again", "twin (Uni)", NOV_30_2018 - 86400 * 90, s[2]),  # ties he_j
        item("nan", "broken (x)", NOV_30_2018, {**s[0], "overall_mean": None}),  # an invalid kappa: recorded
        item("weak", "w", NOV_30_2018, {**s[0], "overall_mean": 0.31}),
    ]
    bad = [
        item("unclosed", "model (inst", NOV_30_2018, s[0]),
        item(None, "x (y)", NOV_30_2018, s[0]),
        item("when", "x (y)", "yesterday", s[0]),
        item("text", "x (y)", NOV_30_2018, {**s[0], "overall_mean": "0.8"}),
        item("nokey", "x (y)", NOV_30_2018, {k: v for k, v in s[0].items() if k != "overall_mean"}),
        "not an object",
    ]
    document = {"config": {"metadata": {"name": "MURA"}}, "leaderboard": good[:3] + bad + good[3:]}
    return write_json(folder / "out.json", document), results


def test_an_import_records_what_parses_and_reports_the_rest(tmp_path, dump):
    path, results = dump
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codalab", path, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout
        == f"imported 6 entries from {path} into {db}: 6 new, 0 already there; 6 skipped (listed on stderr)\n"
    )
    reasons = [line.removeprefix(f"{path}: ") for line in proc.stderr.splitlines()]
    assert reasons == [
        "leaderboard[3] (user 'unclosed'): submission.description: the last '(' is never closed in "
        "'model (inst'; skipped",
        "leaderboard[4]: submission.user_name: expected the submitter's name, found nothing; skipped",
        "leaderboard[5] (user 'when'): submission.created: expected a Unix time in seconds, found str "
        "'yesterday'; skipped",
        "leaderboard[6] (user 'text'): scores.overall_mean: expected a number between -1 and 1 or null, "
        "found '0.8'; skipped",
        "leaderboard[7] (user 'nokey'): scores.overall_mean: missing; skipped",
        "leaderboard[8]: item: expected a JSON object, found str 'not an object'; skipped",
    ]
    assert all(line.startswith(f"{path}: ") for line in proc.stderr.splitlines())
    with open_store(db) as store:
        rows = store.query(
            "SELECT submitter, model, institution, link, submitted, scored, kappa, wrist_upper "
            "FROM submissions ORDER BY id"
        )
    assert rows[0][:4] == ("turbobits", "base-comb2-xuan-v3(ensemble)", "jzhang Availink", None)
    assert rows[0][4:] == (
        "2018-11-30T19:48:12Z",
        "2018-11-30T19:58:12Z",
        results[0]["Overall_Mean"],
        results[0]["Wrist_Upper"],
    )
    assert rows[2][:4] == ("he_j", None, None, None)
    assert [r[0] for r in rows] == ["turbobits", "maxentropy", "he_j", "same_again", "nan", "weak"]

    again = mura("leaderboard", "import-codalab", path, "--db", db)
    assert again.returncode == 0 and "0 new, 6 already there" in again.stdout


def test_render_regenerates_the_mura_table_from_the_import(tmp_path, dump):
    path, results = dump
    db = tmp_path / "lb.sqlite"
    assert mura("leaderboard", "import-codalab", path, "--db", db).returncode == 0
    label = "Best Radiologist Performance Stanford University Rajpurkar & Irvin et al., 17"
    proc = mura(
        "leaderboard", "render", "--db", db, "--radiologist-kappa", "0.778", "--radiologist-label", label
    )
    assert proc.returncode == 0, proc.stderr

    def day(offset_days: int) -> str:
        return datetime.fromtimestamp(NOV_30_2018 - 86400 * offset_days, timezone.utc).strftime("%b %d, %Y")

    cells = {  # user: (result, days before Nov 30, 2018, the Model cell)
        "turbobits": (results[0], 0, "base-comb2-xuan-v3(ensemble) (jzhang Availink)"),
        "maxentropy": (
            results[1],
            30,
            "Stanford Baseline (ensemble) (Stanford University) <https://arxiv.org/abs/1712.06957>",
        ),
        "he_j": (results[2], 60, r"he\_j"),
        "same_again": (results[2], 90, "twin (Uni)"),  # the same kappa as he_j, submitted earlier
    }
    order = sorted(cells, key=lambda u: (-cells[u][0]["Overall_Mean"], -cells[u][1]))
    expected, rank_, previous = [], 0, None
    for user in order:
        kappa = cells[user][0]["Overall_Mean"]
        rank_ += kappa != previous
        previous = kappa
        expected.append(f"| {rank_} | {day(cells[user][1])} | {cells[user][2]} | {kappa:.3f} |")
    assert proc.stdout.splitlines() == [
        "| Rank | Date | Model | Kappa |",
        "|---|---|---|---|",
        f"|  |  | {label} | 0.778 |",
        *expected,
    ]
    assert order.index("same_again") == order.index("he_j") - 1
    assert (
        proc.stderr == "4 entries on the board; left off: 1 with an invalid kappa; 1 with a kappa below 0.5\n"
    )


def test_strict_records_nothing_when_an_entry_cannot_be_read(tmp_path, dump):
    path, _ = dump
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codalab", path, "--db", db, "--strict")
    assert proc.returncode == 3
    assert proc.stderr.splitlines()[-1] == (
        f"organiser error: 6 entries of {path} cannot be read (listed above); nothing recorded"
    )
    assert not db.exists()


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "is empty"),
        (b'{"leaderboard": [', "is not valid JSON: Expecting value at line 1, column 18"),
        (b"[1, 2]", "expected a JSON object with a 'leaderboard' list, found list"),
        (b'{"config": {}}', "leaderboard: expected a list of entries, found nothing"),
        (b'{"leaderboard": {"a": 1}}', "leaderboard: expected a list of entries, found dict"),
        (b"\xff\xfe{}", "is not UTF-8"),
    ],
)
def test_a_malformed_dump_is_an_organiser_error_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "dump.json"
    path.write_bytes(content)
    proc = mura("leaderboard", "import-codalab", path, "--db", tmp_path / "lb.sqlite")
    assert_host_error(proc, str(path), needle)
    assert not (tmp_path / "lb.sqlite").exists()


def test_a_missing_dump(tmp_path):
    assert_host_error(mura("leaderboard", "import-codalab", tmp_path / "no.json"), "does not exist")


def test_the_dump_shape_in_the_spec_round_trips(tmp_path):
    # A dump item exactly as SPEC §5 shows it, with NaN for an undefined per-type kappa.
    text = json.dumps(
        {
            "leaderboard": [
                item(
                    "u", "m (i) http://l.x", NOV_30_2018, {"overall_mean": 0.843, "elbow_mean": float("nan")}
                )
            ]
        }
    )
    path = tmp_path / "d.json"
    path.write_text(text)
    db = tmp_path / "lb.sqlite"
    assert mura("leaderboard", "import-codalab", path, "--db", db).returncode == 0
    with open_store(db) as store:
        assert store.query(
            "SELECT model, institution, link, kappa, elbow_kappa, elbow_lower FROM submissions"
        ) == [("m", "i", "http://l.x", 0.843, None, None)]


def test_huge_numbers_and_unprintable_names_are_skipped_or_read_not_a_traceback(tmp_path):
    huge = "1" + "0" * 400  # an int no float holds
    items = [
        '{"submission": {"user_name": "big", "description": "m (i)", "created": 1543607292}, '
        f'"scores": {{"overall_mean": {huge}}}}}',
        '{"submission": {"user_name": "wide", "description": "m (i)", "created": 1543607292}, '
        f'"scores": {{"overall_mean": 0.8, "overall_lower": -{huge}, "overall_upper": {huge}}}}}',
        '{"submission": {"user_name": "inf", "description": "m (i)", "created": 1543607292}, '
        '"scores": {"overall_mean": 1e400, "overall_lower": NaN}}',
        '{"submission": {"user_name": "bad\\ud800", "description": "m (i)", "created": 1543607292}, '
        '"scores": {"overall_mean": 0.8}}',
        '{"submission": {"user_name": "esc", "description": "m\\u001b[2J (i)", "created": 1543607292}, '
        '"scores": {"overall_mean": 0.8}}',
        '{"submission": {"user_name": "late", "description": "m (i)", "created": 1e400}, '
        '"scores": {"overall_mean": 0.8}}',
    ]
    path = tmp_path / "dump.json"
    path.write_text('{"leaderboard": [' + ",\n".join(items) + "]}")
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codalab", path, "--db", db)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    reasons = [line.removeprefix(f"{path}: ") for line in proc.stderr.splitlines()]
    assert reasons == [
        "leaderboard[0] (user 'big'): scores.overall_mean: expected a number between -1 and 1 or null, "
        "found 1000000000000000000000000000000000000000000000000000000000000000000000000000000…; skipped",
        "leaderboard[3] (user 'bad\\ud800'): submission.user_name: expected printable text, found the "
        "control character or invalid character U+D800 in 'bad\\ud800'; skipped",
        "leaderboard[4] (user 'esc'): submission.description: expected printable text, found the control "
        "character or invalid character U+001B in 'm\\x1b[2J (i)'; skipped",
        "leaderboard[5] (user 'late'): submission.created: expected a Unix time in seconds, found float "
        "inf; skipped",
    ]
    with open_store(db) as store:
        assert store.query(
            "SELECT submitter, kappa, kappa_lower, kappa_upper FROM submissions ORDER BY id"
        ) == [
            ("wide", 0.8, -1.0, 1.0),  # the official script's unclipped bounds, clipped
            ("inf", None, None, None),  # infinity and NaN: undefined, an invalid kappa
        ]
