"""Every output format of `mura leaderboard render`, from a store of real `mura score` results."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser

import pytest
from leaderboard_helpers import mura, score_result

from scorer.leaderboard import codalab, rank
from scorer.leaderboard.render import display_date, to_csv, to_html, to_json, to_markdown
from scorer.leaderboard.schema import SCORE_COLUMNS
from scorer.leaderboard.store import Entry, open_store

TYPES = ["Elbow", "Finger", "Forearm", "Hand", "Humerus", "Shoulder", "Wrist"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("board")
    path = folder / "lb.sqlite"
    with open_store(path) as store:
        entries = [
            Entry(
                "turbobits",
                "base-comb2-xuan-v3(ensemble)",
                "jzhang Availink",
                "http://example.org/a|b",
                "2018-11-30",
            ),
            Entry(
                "he_j", submitted="2018-08-31T23:30:00-02:00"
            ),  # no model: the submitter's name; UTC date Sep 01
            Entry("rology", "DenseNet *v2* [x]", None, "https://www.rology.net", "2018-01-31"),
            Entry("weak", "w", submitted="2018-03-01"),
        ]
        for (accuracy, seed), e in zip([(0.95, 1), (0.9, 2), (0.88, 3), (0.6, 4)], entries):
            store.add_result(score_result(folder, accuracy, seed), e)
    return path


@pytest.fixture(scope="module")
def board(store_path):
    with open_store(store_path) as store:
        return rank.build(store)


def test_dates_read_like_the_mura_page():
    assert display_date("2018-11-30T19:48:12Z") == "Nov 30, 2018"
    assert display_date("2019-01-05T00:00:00Z") == "Jan 05, 2019"


def test_markdown_is_the_mura_table(board):
    lines = to_markdown(board).splitlines()
    assert lines[:2] == ["| Rank | Date | Model | Kappa |", "|---|---|---|---|"]
    assert lines[2].startswith("|  |  | Best Radiologist Performance (Rad")
    cells = {line.split(" | ")[2]: line for line in lines[3:]}
    assert set(cells) == {
        r"base-comb2-xuan-v3(ensemble) (jzhang Availink) <http://example.org/a%7Cb>",
        r"he\_j",
        r"DenseNet \*v2\* \[x\] <https://www.rology.net>",
    }  # the weak entry is below 0.5; special characters are escaped, a | in a link encoded
    assert "| Sep 01, 2018 | he\\_j |" in cells[r"he\_j"]
    assert (
        "| Nov 30, 2018 |"
        in cells[r"base-comb2-xuan-v3(ensemble) (jzhang Availink) <http://example.org/a%7Cb>"]
    )
    for line, row in zip(lines[3:], board.rows):
        assert line.startswith(f"| {row.rank} | ") and line.endswith(f" | {row.entry.kappa:.3f} |")
        assert line.count(" | ") == 3  # four cells: nothing broke the table


def test_csv_has_every_column_at_full_precision(board, store_path):
    rows = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert rows[0]["kind"] == "radiologist" and rows[0]["rank"] == ""
    submissions = rows[1:]
    assert [int(r["rank"]) for r in submissions] == [row.rank for row in board.rows]
    with open_store(store_path) as store:
        for r in submissions:
            [stored] = store.query(
                f"SELECT {', '.join(SCORE_COLUMNS)} FROM submissions WHERE id = ?", (int(r["id"]),)
            )
            assert tuple(None if r[c] == "" else float(r[c]) for c in SCORE_COLUMNS) == stored
    top = next(r for r in submissions if r["submitter"] == "turbobits")
    assert top["entry"] == "base-comb2-xuan-v3(ensemble) (jzhang Availink) http://example.org/a%7Cb"
    assert (top["model"], top["institution"], top["link"]) == (
        "base-comb2-xuan-v3(ensemble)",
        "jzhang Availink",
        "http://example.org/a|b",
    )
    assert top["date"] == "Nov 30, 2018" and top["submitted"] == "2018-11-30T00:00:00Z"
    assert len(top["content_sha256"]) == 64


def test_json_holds_the_same_rows_as_numbers(board):
    document = json.loads(to_json(board))
    assert document["format"] == "mura-kit leaderboard v2"
    assert (document["threshold"], document["keep"]) == (0.5, "all")
    assert document["left_off"] == {"below_threshold": 1}
    assert document["radiologist"]["kappa"] == board.radiologist.kappa
    assert [(e["rank"], e["kappa"], e["elbow_upper"]) for e in document["entries"]] == [
        (row.rank, row.entry.kappa, row.entry.scores[5]) for row in board.rows
    ]
    he_j = next(e for e in document["entries"] if e["submitter"] == "he_j")
    assert he_j["model"] is None and he_j["entry"] == "he_j"


class _Table(HTMLParser):
    """The leaderboard table's header and rows (cell text), and the forest plot's SVG shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.head: list[str] = []
        self.rows: list[list[str]] = []
        self.svgs: list[dict] = []
        self.squares: list[dict] = []
        self.intervals: list[dict] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self._in_table = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "leaderboard":
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = []
        elif tag == "svg":
            self.svgs.append(attrs)
        elif tag == "rect" and attrs.get("class") == "kappa":
            self.squares.append(attrs)
        elif tag == "line" and attrs.get("class") == "interval":
            self.intervals.append(attrs)
        elif tag == "a":
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_page_has_the_table_with_per_type_columns_and_the_forest_plot(board):
    page = to_html(board)
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page and "<script" not in page
    parsed = _Table()
    parsed.feed(page)
    head, radiologist, *rows = parsed.rows
    assert head == ["Rank", "Date", "Model", "Kappa", "Interval", *TYPES]
    assert radiologist[:2] == ["", ""] and radiologist[2].startswith("Best Radiologist Performance")
    assert len(rows) == len(board.rows)
    for cells, row in zip(rows, board.rows):
        assert cells[0] == str(row.rank) and cells[3] == f"{row.entry.kappa:.3f}"
        assert cells[4] == f"[{row.entry.scores[1]:.3f}, {row.entry.scores[2]:.3f}]"
        assert cells[5:] == [f"{row.entry.scores[3 * (i + 1)]:.3f}" for i in range(7)]
    models = {cells[2] for cells in rows}
    assert "base-comb2-xuan-v3(ensemble) (jzhang Availink) http://example.org/a%7Cb" in models
    assert sorted(parsed.links) == ["http://example.org/a%7Cb", "https://www.rology.net"]
    # The forest plot: inline SVG (no image to fetch), a square per radiologist and top entry at
    # its kappa, the interval's line around it; higher kappas further right.
    [svg] = parsed.svgs
    assert svg["role"] == "img" and svg["aria-label"].startswith("Forest plot")
    drawn = [r.scores[:3] for r in board.radiologists] + [row.entry.scores[:3] for row in board.rows[:20]]
    assert len(parsed.squares) == len(drawn) == len(parsed.intervals)
    centres = [float(sq["x"]) + float(sq["width"]) / 2 for sq in parsed.squares]
    # One linear kappa axis for every square and interval end (to the 0.1 px the SVG is written at).
    (c0, s0), (c1, s1) = min(zip(centres, drawn)), max(zip(centres, drawn))
    scale = (c1 - c0) / (s1[0] - s0[0])
    for centre, line, (kappa, lower, upper) in zip(centres, parsed.intervals, drawn):
        for position, value in ((centre, kappa), (float(line["x1"]), lower), (float(line["x2"]), upper)):
            assert position == pytest.approx(c0 + scale * (value - s0[0]), abs=0.2)
    assert to_html(board) == page  # the same board, the same bytes
    assert "1 with a kappa below 0.5" in page


def test_html_escapes_what_participants_type(tmp_path, board):
    hostile = rank.Scored(
        99,
        "x",
        '<img src=x onerror="alert(1)">',
        "</td><script>",
        None,
        "2018-01-01T00:00:00Z",
        (0.9,) + (None,) * 23,
    )
    page = to_html(rank.Board([rank.Row(1, hostile)], None, [], 0.5, "all"))
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_the_same_store_renders_to_the_same_bytes(store_path, tmp_path):
    for fmt in ("md", "html", "csv", "json"):
        first = mura("leaderboard", "render", "--db", store_path, "--format", fmt)
        second = mura(
            "leaderboard", "render", "--db", store_path, "--format", fmt, "--out", tmp_path / f"b.{fmt}"
        )
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        assert first.stdout.encode() == (tmp_path / f"b.{fmt}").read_bytes()
        assert second.stdout == ""
        assert re.fullmatch(
            r"3 entries on the board; left off: 1 with a kappa below 0.5(; written to .*)?\n", first.stderr
        )


def test_options_change_what_is_shown(store_path):
    proc = mura(
        "leaderboard",
        "render",
        "--db",
        store_path,
        "--threshold",
        "0",
        "--radiologist-kappa",
        "0.778",
        "--radiologist-label",
        "Best Radiologist Performance Stanford University",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2] == "|  |  | Best Radiologist Performance Stanford University | 0.778 |"
    assert len(lines) == 3 + 4  # the weak entry too
    page = mura(
        "leaderboard",
        "render",
        "--db",
        store_path,
        "--format",
        "html",
        "--title",
        "My <board>",
        "--plot-top",
        "1",
    )
    assert "<title>My &lt;board&gt;</title>" in page.stdout and "top 1 entries" in page.stdout


def test_an_empty_store_renders_an_empty_table(tmp_path):
    path = tmp_path / "lb.sqlite"
    open_store(path).close()
    proc = mura("leaderboard", "render", "--db", path)
    assert proc.returncode == 0
    assert proc.stdout == "| Rank | Date | Model | Kappa |\n|---|---|---|---|\n"
    assert "no radiologist row" in proc.stderr
    page = mura("leaderboard", "render", "--db", path, "--format", "html")
    assert page.returncode == 0 and "<img" not in page.stdout


HOSTILE = [  # (submitter, model, institution) as participants might type them
    ('=HYPERLINK("http://evil.x","win")', None, None),
    ("mallory", "+cmd|' /C calc'!A0", "-2+3"),
    ("eve", "@SUM(A1:A9)", "=1+1"),
    ("zoë", "a | b <script>alert(1)</script> &lt;b&gt; *x* `y`", "Université «Paris» & Co"),
]


@pytest.fixture(scope="module")
def hostile_board(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    path = folder / "lb.sqlite"
    with open_store(path) as store:
        for i, (submitter, model, institution) in enumerate(HOSTILE):
            entry = Entry(submitter, model, institution, None, f"2018-0{i + 1}-01")
            store.add_result(score_result(folder, 0.9 + 0.01 * i, seed=i), entry)
        board = rank.build(store, radiologist_kappa=0.778, radiologist_label="-Radiologists")
    assert len(board.rows) == len(HOSTILE)
    return board


def test_csv_text_that_a_spreadsheet_would_run_starts_with_a_quote(hostile_board):
    rows = list(csv.DictReader(io.StringIO(to_csv(hostile_board))))
    by_submitter = {r["submitter"]: r for r in rows[1:]}
    assert set(by_submitter) == {'\'=HYPERLINK("http://evil.x","win")', "mallory", "eve", "zoë"}
    assert by_submitter["mallory"]["model"] == "'+cmd|' /C calc'!A0"
    assert by_submitter["mallory"]["institution"] == "'-2+3"
    assert by_submitter["mallory"]["entry"] == "'+cmd|' /C calc'!A0 (-2+3)"
    assert by_submitter["eve"]["model"] == "'@SUM(A1:A9)" and by_submitter["eve"]["institution"] == "'=1+1"
    assert by_submitter["zoë"]["model"] == HOSTILE[3][1]  # nothing to neutralise: exactly as typed
    assert rows[0]["entry"] == "'-Radiologists"
    for r in rows:
        for column in ("submitter", "model", "institution", "entry"):
            assert not r[column].startswith(("=", "+", "-", "@", "\t", "\r"))
    # Numbers stay numbers, a negative one too.
    assert all(float(r["kappa"]) > 0.5 for r in rows[1:])
    negative = rank.Scored(1, "n", "m", None, None, "2018-01-01T00:00:00Z", (0.9, -0.25) + (None,) * 22)
    [row] = list(
        csv.DictReader(io.StringIO(to_csv(rank.Board([rank.Row(1, negative)], None, [], 0.5, "all"))))
    )
    assert row["kappa_lower"] == "-0.25"


def test_json_keeps_what_was_typed_exactly(hostile_board):
    entries = json.loads(to_json(hostile_board))["entries"]
    assert sorted((e["submitter"], e["model"], e["institution"]) for e in entries) == sorted(HOSTILE)


def test_markdown_cells_hold_special_characters_without_breaking_the_table(hostile_board):
    lines = to_markdown(hostile_board).splitlines()
    for line in lines[2:]:
        # four cells: every | inside one is escaped
        assert len(re.split(r"(?<!\\)\|", line)) == 6, line
    zoe = next(line for line in lines if "Universit" in line)
    model = zoe.split(" | ")[2]
    assert model == (
        r"a \| b \<script\>alert(1)\</script\> \&lt;b\&gt; \*x\* \`y\` (Université «Paris» & Co)"
    )
    assert "<script>" not in to_markdown(hostile_board)


def test_html_shows_special_characters_as_text(hostile_board):
    page = to_html(hostile_board)
    parsed = _Table()
    parsed.feed(page)
    _, radiologist, *rows = parsed.rows
    assert radiologist[2] == "-Radiologists"
    models = [cells[2] for cells in rows]
    assert "a | b <script>alert(1)</script> &lt;b&gt; *x* `y` (Université «Paris» & Co)" in models
    assert "+cmd|' /C calc'!A0 (-2+3)" in models
    assert "<script>" not in page
    assert all(len(cells) == 12 for cells in rows)


@pytest.fixture(scope="module")
def mixed_board(tmp_path_factory):
    """A `mura score` result beside two entries imported from CodaLab: one with the official
    script's narrow interval and a note after its institution, one anonymous."""
    folder = tmp_path_factory.mktemp("mixed")
    result = score_result(folder, 0.9, seed=5)
    dump = {
        "leaderboard": [
            {
                "submission": {
                    "user_name": "turbobits",
                    "description": "xuan (Availink) =1+1 | *v3*",
                    "created": 1543607292,
                },
                "scores": {
                    "overall_mean": 0.99,
                    "overall_lower": 0.9872,
                    "overall_upper": 0.9928,
                    "wrist_mean": 0.95,
                    "wrist_lower": 0.94,
                    "wrist_upper": 0.96,
                },
            },
            {
                "submission": {"user_name": None, "description": "", "created": 1536786503},
                "scores": {"overall_mean": 0.98, "overall_lower": 0.978, "overall_upper": 0.982},
            },
        ]
    }
    path = folder / "dump.json"
    path.write_text(json.dumps(dump))
    rows, _, _ = codalab.read_dump(path)
    with open_store(folder / "lb.sqlite") as store:
        store.add_result(result, Entry("alice", "m", None, None, "2018-07-01"))
        store.add_many(rows)
        board = rank.build(store)
    assert [row.entry.submitter for row in board.rows] == ["turbobits", None, "alice"]
    return board


def test_an_imported_interval_is_marked_as_the_official_scripts_in_every_format(mixed_board):
    # CSV and JSON: interval_source beside the numbers; the radiologist row's is the kit's.
    rows = list(csv.DictReader(io.StringIO(to_csv(mixed_board))))
    assert [(r["kind"], r["submitter"], r["interval_source"]) for r in rows] == [
        ("radiologist", "", "kit"),
        ("submission", "turbobits", "codalab"),
        ("submission", "", "codalab"),
        ("submission", "alice", "kit"),
    ]
    document = json.loads(to_json(mixed_board))
    assert document["format"] == "mura-kit leaderboard v2"
    assert document["radiologist"]["interval_source"] == "kit"
    assert [e["interval_source"] for e in document["entries"]] == ["codalab", "codalab", "kit"]
    # HTML: the imported intervals carry a mark, and the page says why they are narrow.
    page = to_html(mixed_board)
    parsed = _Table()
    parsed.feed(page)
    _, _, top, anonymous, kit = parsed.rows
    assert (top[4], anonymous[4]) == ("[0.987, 0.993]†", "[0.978, 0.982]†")
    assert kit[4] == f"[{mixed_board.rows[2].entry.scores[1]:.3f}, {mixed_board.rows[2].entry.scores[2]:.3f}]"
    assert page.count('<td class="codalab-interval">') == 2
    assert '<td title="[0.940, 0.960]† CodaLab&#x27;s, too narrow">0.950</td>' in page
    note = re.search(r'<p class="codalab-note"[^>]*>(.*?)</p>', page).group(1)
    assert "official MURA evaluation script" in note and "square root" in note
    assert "about 30 times too narrow" in note
    assert page.count('class="interval codalab-interval"') == 2  # the forest plot's, dotted
    assert "#1 xuan (Availink) †" in page and "(†, dotted), the official script" in page
    # A board of `mura score` results only has no such note.
    kit_only = rank.Board(mixed_board.rows[2:], None, [], 0.5, "all")
    assert 'class="codalab' not in to_html(kit_only) and "†" not in to_html(kit_only)
    # Markdown is the MURA table: no interval to mark.
    assert all(line.count(" | ") == 3 for line in to_markdown(mixed_board).splitlines()[2:])


def test_anonymous_entries_and_notes_show_in_every_format(mixed_board):
    md = to_markdown(mixed_board).splitlines()
    assert md[3].split(" | ")[2] == r"xuan (Availink) =1+1 \| \*v3\*"
    assert md[4].split(" | ")[2] == "anonymous"
    rows = list(csv.DictReader(io.StringIO(to_csv(mixed_board))))
    assert (rows[1]["note"], rows[1]["entry"]) == ("'=1+1 | *v3*", "xuan (Availink) =1+1 | *v3*")
    assert (rows[2]["submitter"], rows[2]["model"], rows[2]["entry"]) == ("", "", "anonymous")
    entries = json.loads(to_json(mixed_board))["entries"]
    assert (entries[0]["note"], entries[1]["submitter"], entries[1]["entry"]) == (
        "=1+1 | *v3*",
        None,
        "anonymous",
    )
    parsed = _Table()
    parsed.feed(to_html(mixed_board))
    assert [cells[2] for cells in parsed.rows[2:4]] == ["xuan (Availink) =1+1 | *v3*", "anonymous"]
