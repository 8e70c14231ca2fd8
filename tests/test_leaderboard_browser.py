"""The HTML leaderboard, the score report and the participants' page render in a real headless
browser (Debian's chromium) without errors: no console message at all (the pages have no script
and fetch nothing, under a strict CSP), the tables in the DOM, and the plots (the leaderboard's
forest plot, the report's ROC curve) actually drawn on screen."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import example_data
import numpy as np
import pytest
from leaderboard_helpers import score_result

from scorer import report
from scorer.leaderboard import rank
from scorer.leaderboard.plot import ENTRY_COLOUR, RADIOLOGIST_COLOUR
from scorer.leaderboard.render import to_html
from scorer.leaderboard.store import Entry, open_store
from scorer.pipeline import score_files
from scorer.settings import Settings
from scorer.svg import MODEL_COLOUR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":CONSOLE[:(\]].*")  # chromium logs every console message (errors too) so

pytestmark = [
    pytest.mark.required_in_ci,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (.ci/run installs it: apt-get install chromium)"
    ),
]


def _chromium(page: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    profile = work / f"profile-{len(list(work.glob('profile-*')))}"  # a fresh profile every run
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _pixels_of(png: Path, colour: str) -> int:
    from PIL import Image  # the model extra's; the organisers' side never imports it

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(_hex(colour))).sum(axis=2) <= 24).sum())


def _shown(page: Path, work: Path) -> tuple[str, Path, list[str]]:
    """Chromium's DOM of `page`, its screenshot, and what went wrong showing it (a failed run, any
    console message)."""
    problems = []
    dom = _chromium(page, work, "--dump-dom")
    shot = work / f"{page.stem}.png"
    screen = _chromium(page, work, f"--screenshot={shot}", "--window-size=1400,2400")
    for run in (dom, screen):
        if run.returncode != 0:
            problems.append(f"chromium exited with {run.returncode}: {run.stderr[-500:]}")
        problems += [f"console: {m.group(0)}" for m in CONSOLE.finditer(run.stderr)]
    return dom.stdout, shot, problems


def browser_problems(page: Path, work: Path, rows: int) -> list[str]:
    """What goes wrong when chromium shows `page`; an empty list when nothing does."""
    dom, shot, problems = _shown(page, work)
    table = re.search(r'<table id="leaderboard">(.*?)</table>', dom, re.S)
    if table is None:
        problems.append("no leaderboard table in the DOM")
    elif table.group(1).count("<tr") != rows + 1:
        problems.append(f"the table has {table.group(1).count('<tr') - 1} rows, expected {rows}")
    if not shot.exists():
        problems.append("no screenshot")
    else:
        for name, colour in [("entries", ENTRY_COLOUR), ("radiologists", RADIOLOGIST_COLOUR)]:
            if _pixels_of(shot, colour) < 200:
                problems.append(f"the forest plot's {name} are not on screen")
    return problems


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    with open_store(folder / "lb.sqlite") as store:
        for i in range(24):
            result = score_result(folder, 0.8 + 0.008 * i, seed=i)
            store.add_result(
                result, Entry(f"team{i}", f"model <{i}> & co", "Uni", "https://example.org/x", "2018-07-01")
            )
        board = rank.build(store)
    path = folder / "leaderboard.html"
    path.write_text(to_html(board))
    return path, folder, len(board.rows) + 1


def test_the_leaderboard_page_renders_in_chromium_without_errors(page):
    path, folder, rows = page
    assert rows > 20
    assert browser_problems(path, folder, rows) == []


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (lambda p: p.replace("</body>", "<script>notAFunction()</script></body>"), "console: "),
        (
            lambda p: p.replace('<meta http-equiv="Content-Security-Policy"', '<meta name="x"').replace(
                "</body>", "<script>notAFunction()</script></body>"
            ),
            "Uncaught ReferenceError",
        ),
        (
            lambda p: re.sub(r'<line class="interval".*?</rect>', "", p),
            "forest plot's entries are not on screen",
        ),
        (lambda p: p.replace('<table id="leaderboard">', '<table id="other">'), "no leaderboard table"),
        (lambda p: re.sub(r"<tr><td>\d+</td>.*?</tr>\n", "", p, count=1), "rows, expected"),
    ],
)
def test_the_check_catches_a_broken_page(page, tmp_path, break_it, expected):
    path, _, rows = page
    broken = tmp_path / "broken.html"
    broken.write_text(break_it(path.read_text()))
    problems = browser_problems(broken, tmp_path, rows)
    assert any(expected in problem for problem in problems), problems


def report_problems(page: Path, work: Path, tables: int, roc: bool) -> list[str]:
    """What goes wrong when chromium shows a score report (`roc`: with its ROC curve)."""
    dom, shot, problems = _shown(page, work)
    if dom.count("<table>") != tables:
        problems.append(f"the page has {dom.count('<table>')} tables, expected {tables}")
    if roc and '<polyline class="roc"' not in dom:
        problems.append("no ROC curve in the DOM")
    if roc and shot.exists() and _pixels_of(shot, MODEL_COLOUR) < 200:
        problems.append("the ROC curve is not on screen")
    if not shot.exists():
        problems.append("no screenshot")
    return problems


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    """A `mura score` result with probabilities (the ROC curve) and three scored radiologists."""
    folder = tmp_path_factory.mktemp("report")
    test = example_data.make_test(n=120, seed=5)
    example_data.write_gold(folder / "gold.csv", test)
    predictions = example_data.noisy_predictions(test, 0.85, seed=6)
    example_data.write_predictions(folder / "output.csv", test.studies, list(predictions))
    probabilities = np.clip(
        0.5 * predictions + np.random.default_rng(7).normal(0.25, 0.15, predictions.size), 0, 1
    )
    example_data.write_predictions(
        folder / "probabilities.csv", test.studies, [f"{p:.4f}" for p in probabilities]
    )
    settings = Settings(resamples=100)
    return score_files(
        folder / "gold.csv", folder / "output.csv", settings, probabilities_path=folder / "probabilities.csv"
    )


def test_the_score_report_renders_in_chromium_without_errors(result, tmp_path):
    assert result["roc"]["radiologists"]  # operating points to draw
    page = tmp_path / "score.html"
    page.write_text(report.to_html(result))
    # Tables: the model, the radiologists, the AUC.
    assert report_problems(page, tmp_path, tables=3, roc=True) == []


def test_the_participants_page_renders_in_chromium_without_errors(result, tmp_path):
    page = tmp_path / "detailed_results.html"
    page.write_text(report.participant_html(result))
    assert report_problems(page, tmp_path, tables=2, roc=False) == []


@pytest.mark.parametrize(
    "break_it, expected",
    [
        # A plot as an embedded PNG (as the report once had) is refused under the page's CSP.
        (
            lambda p: p.replace("</body>", '<img alt="x" src="data:image/png;base64,iVBORw0KGgo=">'),
            "console: ",
        ),
        (lambda p: re.sub(r'<polyline class="roc"[^>]*>', "", p), "no ROC curve"),
        (
            lambda p: p.replace('stroke-width="2" stroke-linejoin', 'stroke-width="0" stroke-linejoin'),
            "not on screen",
        ),
        (lambda p: p.replace("<table>", "<div>", 1), "tables, expected 3"),
    ],
)
def test_the_report_check_catches_a_broken_page(result, tmp_path, break_it, expected):
    broken = tmp_path / "broken.html"
    broken.write_text(break_it(report.to_html(result)))
    problems = report_problems(broken, tmp_path, tables=3, roc=True)
    assert any(expected in problem for problem in problems), problems
