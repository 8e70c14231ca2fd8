"""Importing a CodaLab Worksheets competition dump: description parsing, entries that cannot be
read, and the table regenerated from the import."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from leaderboard_helpers import assert_host_error, mura, score_result, write_json

from scorer.leaderboard import records
from scorer.leaderboard.codalab import Description, parse_description
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
        # As the page did, the parentheses' text even when it is the model's kind.
        ("double-dense-Axy-Axyf512(ensemble)", ("double-dense-Axy-Axyf512", "ensemble", None)),
        ("base-comb2-jun2(ensemble)()", ("base-comb2-jun2(ensemble)", None, None)),
        ("{EnglebertDGC} (single model) (UCLouvain)", ("{EnglebertDGC} (single model)", "UCLouvain", None)),
        ("SER_Net_Baseline (single model) (SJTU) ", ("SER_Net_Baseline (single model)", "SJTU", None)),
        ("http://only.a/link", (None, None, "http://only.a/link")),
        ("  multi   spaces\n(an  inst)  ", ("multi spaces", "an inst", None)),
        ("", (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_descriptions_are_split_like_the_mura_page(text, expected):
    assert parse_description(text) == Description(*expected)


@pytest.mark.parametrize(
    "text, expected, why",
    [
        # Text after the `)`, which the MURA page's script dropped: the institution when the
        # parentheses hold the model's kind, else a note.
        ("ty101(single model)CCLab", ("ty101(single model)", "CCLab", None, None), "model's kind"),
        ("base(ensemble)AvailinkAI", ("base(ensemble)", "AvailinkAI", None, None), "model's kind"),
        (
            "ensemble1 (ensemble) ITU",
            ("ensemble1 (ensemble)", "ITU", None, None),
            "'ITU' taken as the institution",
        ),
        (
            "ExtremityModel (ensemble) Radiobotics www.radiobotics.com",
            ("ExtremityModel (ensemble)", "Radiobotics", "http://www.radiobotics.com", None),
            "'www.radiobotics.com' taken as the link http://www.radiobotics.com",
        ),
        (
            "DenseNet_144 (single model) Rology http://www.rology.net/",
            ("DenseNet_144 (single model)", "Rology", "http://www.rology.net/", None),
            "'Rology' taken as the institution",
        ),
        (
            "Densenet DI-MT (Single)-AI Squared-G4",
            ("Densenet DI-MT (Single)", "AI Squared-G4", None, None),
            "model's kind",
        ),
        (
            "Ensemble_V0 (ensemble model) Rology",
            ("Ensemble_V0 (ensemble model)", "Rology", None, None),
            "kind",
        ),
        (
            "model (Uni) v2 final",
            ("model", "Uni", None, "v2 final"),
            "'v2 final' after the institution's ')' kept as a note",
        ),
        ("m (a) (b) c http://x.y", ("m (a)", "b", "http://x.y", "c"), "kept as a note"),
        # No parentheses: all of it is the model name (the page showed the user name instead).
        ("densenet169_v2/single model", ("densenet169_v2/single model", None, None, None), "no parentheses"),
        ("A.AI Ensemble A.AI ", ("A.AI Ensemble A.AI", None, None, None), "no parentheses"),
        ("single model http://a.b/c", ("single model", None, "http://a.b/c", None), "no parentheses"),
        # What the kit refused before: unbalanced or nested parentheses.
        ("model (inst", ("model (inst", None, None, None), "unbalanced parentheses"),
        ("model inst)", ("model inst)", None, None, None), "unbalanced parentheses"),
        ("m (a) (b", ("m (a) (b", None, None, None), "unbalanced parentheses"),
        ("m (a (b))", ("m", "a (b)", None, None), "nested parentheses"),
    ],
)
def test_a_split_that_keeps_what_the_page_dropped_says_it_guessed(text, expected, why):
    parsed = parse_description(text)
    assert (parsed.model, parsed.institution, parsed.link, parsed.note) == expected
    assert why in parsed.guess


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
    refused_before = [  # imported now: the split is guessed; a null user name is anonymous
        item("unclosed", "model (inst", NOV_30_2018, {**s[0], "overall_mean": 0.41}),
        item(None, "x (y)", NOV_30_2018, {**s[0], "overall_mean": 0.42}),
    ]
    bad = [
        item("when", "x (y)", "yesterday", s[0]),
        item("text", "x (y)", NOV_30_2018, {**s[0], "overall_mean": "0.8"}),
        item("nokey", "x (y)", NOV_30_2018, {k: v for k, v in s[0].items() if k != "overall_mean"}),
        "not an object",
    ]
    document = {
        "config": {"metadata": {"name": "MURA"}},
        "leaderboard": good[:3] + refused_before + bad + good[3:],
    }
    return write_json(folder / "out.json", document), results


def test_an_import_records_what_parses_and_reports_the_rest(tmp_path, dump):
    path, results = dump
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codalab", path, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"imported 8 entries from {path} into {db}: 8 new, 0 already there; 1 without an overall score "
        "(left off the board); 2 split by a guess (listed on stderr); 4 skipped (listed on stderr)\n"
    )
    reasons = [line.removeprefix(f"{path}: ") for line in proc.stderr.splitlines()]
    assert reasons == [
        "leaderboard[3] (user 'unclosed'): guessed the split of 'model (inst': unbalanced parentheses: all "
        "of it taken as the model name; read as model 'model (inst'",
        "leaderboard[5] (user 'when'): submission.created: expected a Unix time in seconds, found str "
        "'yesterday'; skipped",
        "leaderboard[6] (user 'text'): scores.overall_mean: expected a number between -1 and 1 or null, "
        "found '0.8'; skipped",
        "leaderboard[7] (user 'nokey'): scores.overall_mean: missing; skipped",
        "leaderboard[8]: item: expected a JSON object, found str 'not an object'; skipped",
        "leaderboard[11] (user 'weak'): guessed the split of 'w': no parentheses: all of it taken as the "
        "model name; read as model 'w'",
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
    assert rows[4][:4] == (None, "x", "y", None)  # anonymous
    submitters = ["turbobits", "maxentropy", "he_j", "unclosed", None, "same_again", "nan", "weak"]
    assert [r[0] for r in rows] == submitters

    again = mura("leaderboard", "import-codalab", path, "--db", db)
    assert again.returncode == 0 and "8 new" not in again.stdout and "0 new, 8 already there" in again.stdout


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
        proc.stderr == "4 entries on the board; left off: 1 with an invalid kappa; 3 with a kappa below 0.5\n"
    )


def test_strict_records_nothing_when_an_entry_cannot_be_read(tmp_path, dump):
    path, _ = dump
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codalab", path, "--db", db, "--strict")
    assert proc.returncode == 3
    assert proc.stderr.splitlines()[-1] == (
        f"organiser error: 4 entries of {path} cannot be read (listed above); nothing recorded"
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


# Each description pattern of the real MURA dump (out-v1.1.json: 130 entries, 23 of which the
# kit used to skip), with the split expected and the rank the MURA page's rules give:
# (user, description, overall kappa, model, institution, note, link, guessed, rank). Equal kappas
# share a rank; two kappas shown as 0.764 do not; a kappa of exactly 0.5 stays on the board.
MURA_PATTERNS = [
    (
        "turbobits",
        "base-comb2-xuan-v3(ensemble)(jzhang Availink)",
        0.8434782608695652,
        "base-comb2-xuan-v3(ensemble)",
        "jzhang Availink",
        None,
        None,
        False,
        1,
    ),
    (
        "Radiobotics",
        "ExtremityModel (ensemble) Radiobotics www.radiobotics.com",
        0.81,
        "ExtremityModel (ensemble)",
        "Radiobotics",
        None,
        "http://www.radiobotics.com",
        True,
        2,
    ),
    ("notes", "model (Uni) v2 final", 0.80, "model", "Uni", "v2 final", None, True, 3),
    (
        "mq",
        "ty101(single model)CCLab",
        0.773274917853231,
        "ty101(single model)",
        "CCLab",
        None,
        None,
        True,
        4,
    ),
    (None, "", 0.773274917853231, None, None, None, None, False, 4),
    (
        "gonglinyuan",
        "gcm (ensemble) (Peking University)",
        0.773274917853231,
        "gcm (ensemble)",
        "Peking University",
        None,
        None,
        False,
        4,
    ),
    (
        "dwh1121",
        "AIAPlus (ensemble) (Taiwan AI Academy) http://aiacademy.tw",
        0.7641921397379914,
        "AIAPlus (ensemble)",
        "Taiwan AI Academy",
        None,
        "http://aiacademy.tw",
        False,
        5,
    ),
    (
        "HuangyjSJTU",
        "SER_Net_Baseline (single model) (SJTU) ",
        0.7636761487964989,
        "SER_Net_Baseline (single model)",
        "SJTU",
        None,
        None,
        False,
        6,
    ),
    (
        "desheng",
        "base(ensemble)AvailinkAI",
        0.6977248104008668,
        "base(ensemble)",
        "AvailinkAI",
        None,
        None,
        True,
        7,
    ),
    (
        "sahinyu",
        "ensemble1 (ensemble) ITU",
        0.6977248104008668,
        "ensemble1 (ensemble)",
        "ITU",
        None,
        None,
        True,
        7,
    ),
    (
        "he_j",
        "densenet169_v2/single model",
        0.6977248104008668,
        "densenet169_v2/single model",
        None,
        None,
        None,
        True,
        7,
    ),
    (
        "aiinside",
        "Densenet DI-MT (Single)-AI Squared-G4",
        0.6903440621531631,
        "Densenet DI-MT (Single)",
        "AI Squared-G4",
        None,
        None,
        True,
        8,
    ),
    ("he_j", "", 0.69, None, None, None, None, False, 9),
    (
        "englal",
        "{EnglebertDGC} (single model) (UCLouvain)",
        0.6842105263157894,
        "{EnglebertDGC} (single model)",
        "UCLouvain",
        None,
        None,
        False,
        10,
    ),
    ("HikmatKhan", "A.AI Ensemble A.AI ", 0.65, "A.AI Ensemble A.AI", None, None, None, True, 11),
    (
        "rology",
        "DenseNet_144 (single model) Rology http://www.rology.net/",
        0.62,
        "DenseNet_144 (single model)",
        "Rology",
        None,
        "http://www.rology.net/",
        True,
        12,
    ),
    ("stefanh", "VGG19 (single model) ts_1", 0.55, "VGG19 (single model)", "ts_1", None, None, True, 13),
    (
        "maxentropy",
        "double-dense-Axy-Axyf512(ensemble)",
        0.5,
        "double-dense-Axy-Axyf512",
        "ensemble",
        None,
        None,
        False,
        14,
    ),
    ("desheng", "base-comb2-jun2(ensemble)()", 0.5, "base-comb2-jun2(ensemble)", None, None, None, False, 14),
    # Not ranked: below 0.5, and no overall score (recorded, left off as invalid).
    (None, "", 0.4999, None, None, None, None, False, None),
    (
        "pwnme",
        "Pdn (single model) (Personal)",
        None,
        "Pdn (single model)",
        "Personal",
        None,
        None,
        False,
        None,
    ),
    (
        "milab_sx",
        "ty_re (ensemble model) SCU_MILAB",
        None,
        "ty_re (ensemble model)",
        "SCU_MILAB",
        None,
        None,
        True,
        None,
    ),
]


@pytest.fixture(scope="module")
def mura_patterns(tmp_path_factory):
    """A dump with each of MURA_PATTERNS (a day apart, the first the latest), then an entry
    without `overall_mean` (skipped)."""
    items = []
    for i, (user, description, kappa, *_) in enumerate(MURA_PATTERNS):
        bounds = (None, None) if kappa is None else (kappa - 0.0027, kappa + 0.0027)  # as narrow as CodaLab's
        scores = dict(zip(("overall_mean", "overall_lower", "overall_upper"), (kappa, *bounds)))
        items.append(item(user, description, NOV_30_2018 - 86400 * i, scores))
    items.append(item("ngxbac", "baseline (single model)", NOV_30_2018, {"elbow_mean": 0.7}))
    return write_json(tmp_path_factory.mktemp("patterns") / "out-v1.1.json", {"leaderboard": items})


def test_every_entry_with_a_score_is_imported_and_each_guessed_split_reported(tmp_path, mura_patterns):
    db = tmp_path / "lb.sqlite"
    proc = mura("leaderboard", "import-codalab", mura_patterns, "--db", db)
    assert proc.returncode == 0, proc.stderr
    n, guessed = len(MURA_PATTERNS), [i for i, p in enumerate(MURA_PATTERNS) if p[7]]
    assert proc.stdout == (
        f"imported {n} entries from {mura_patterns} into {db}: {n} new, 0 already there; 2 without an "
        f"overall score (left off the board); {len(guessed)} split by a guess (listed on stderr); 1 skipped "
        "(listed on stderr)\n"
    )
    lines = proc.stderr.splitlines()
    assert [line.split("]")[0] for line in lines] == [
        *(f"{mura_patterns}: leaderboard[{i}" for i in guessed),
        f"{mura_patterns}: leaderboard[{n}",
    ]
    assert all("guessed the split of" in line for line in lines[:-1])
    assert lines[-1].endswith("(user 'ngxbac'): scores.overall_mean: missing; skipped")
    assert lines[guessed.index(1)] == (
        f"{mura_patterns}: leaderboard[1] (user 'Radiobotics'): guessed the split of 'ExtremityModel "
        "(ensemble) Radiobotics www.radiobotics.com': the parentheses hold the model's kind: 'Radiobotics' "
        "taken as the institution; 'www.radiobotics.com' taken as the link http://www.radiobotics.com; read "
        "as model 'ExtremityModel (ensemble)', institution 'Radiobotics', link 'http://www.radiobotics.com'"
    )
    with open_store(db) as store:
        stored = store.query(
            "SELECT submitter, model, institution, note, link, kappa FROM submissions ORDER BY id"
        )
    assert stored == [(u, m, i, note, link, k) for u, _, k, m, i, note, link, _, _ in MURA_PATTERNS]
    again = mura("leaderboard", "import-codalab", mura_patterns, "--db", db)
    assert again.returncode == 0 and f"0 new, {n} already there" in again.stdout


def test_the_regenerated_table_ranks_every_entry_as_the_mura_page_did(tmp_path, mura_patterns):
    db = tmp_path / "lb.sqlite"
    assert mura("leaderboard", "import-codalab", mura_patterns, "--db", db).returncode == 0
    proc = mura("leaderboard", "render", "--db", db, "--keep", "all", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["left_off"] == {"invalid_kappa": 2, "below_threshold": 1}
    shown = sorted(
        (
            e["rank"],
            e["submitted"],
            e["submitter"],
            e["model"],
            e["institution"],
            e["note"],
            e["link"],
            e["kappa"],
        )
        for e in document["entries"]
    )
    expected = sorted(
        (rank_, records.unix_iso(NOV_30_2018 - 86400 * i), u, m, inst, note, link, k)
        for i, (u, _, k, m, inst, note, link, _, rank_) in enumerate(MURA_PATTERNS)
        if rank_ is not None
    )
    assert shown == expected
    assert {e["interval_source"] for e in document["entries"]} == {"codalab"}
    cells = {e["entry"] for e in document["entries"]}
    assert {"anonymous", "he_j", "model (Uni) v2 final", "ty101(single model) (CCLab)"} <= cells
    assert "ExtremityModel (ensemble) (Radiobotics) http://www.radiobotics.com" in cells
