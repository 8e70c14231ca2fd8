"""The score report's HTML: one page skeleton with the leaderboard (strict CSP, no image, no
script), and the ROC curve as inline SVG with its points, the radiologists' operating points and
the chance line where they belong."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from leaderboard_helpers import score_result

from scorer import html, report, roc
from scorer.audit import audit_files
from scorer.leaderboard import rank
from scorer.leaderboard.render import to_html as leaderboard_html
from scorer.settings import Settings

TYPES = ["ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"]


class _Svg(HTMLParser):
    """The ROC plot's shapes: the chance line, the curve's points, the operating points and
    every text shown."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[dict] = []
        self.chance: list[dict] = []
        self.curve: list[tuple[float, float]] | None = None
        self.points: list[dict] = []
        self.texts: list[str] = []
        self.images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svgs.append(attrs)
        elif tag == "line" and attrs.get("class") == "chance":
            self.chance.append(attrs)
        elif tag == "polyline" and attrs.get("class") == "roc":
            pairs = [pair.split(",") for pair in attrs["points"].split()]
            self.curve = [(float(a), float(b)) for a, b in pairs]
        elif tag == "circle" and "operating-point" in attrs.get("class", ""):
            self.points.append(attrs)
        elif tag in ("img", "script", "object", "embed", "iframe"):
            self.images += 1

    def handle_data(self, data):
        if data.strip():
            self.texts.append(data.strip())


def _parse(page: str) -> _Svg:
    parsed = _Svg()
    parsed.feed(page)
    return parsed


def _axes(parsed: _Svg):
    """Data (fpr, tpr) -> SVG position, from the chance line's ends: (0, 0) and (1, 1)."""
    [chance] = parsed.chance
    x0, y0, x1, y1 = (float(chance[k]) for k in ("x1", "y1", "x2", "y2"))
    return lambda fpr, tpr: (x0 + fpr * (x1 - x0), y0 + tpr * (y1 - y0))


def _small_roc() -> dict:
    # roc_curve's doctest: points (0, 0), (0, .5), (.5, .5), (.5, 1), (1, 1). Radiologist A reads
    # (FPR 0.5, TPR 0.5), B calls everything abnormal (1, 1): A is under the curve, B is not.
    truth = np.array([0, 0, 1, 1])
    readers = {"A": np.array([0, 1, 0, 1]), "B": np.array([1, 1, 1, 1])}
    return roc.roc_report(
        truth, np.array([0.1, 0.4, 0.35, 0.8]), readers, resamples=50, seed=0, confidence=0.95
    )


def test_the_roc_curve_is_drawn_at_its_points():
    result = _small_roc()
    parsed = _parse(report.roc_svg(result))
    [svg] = parsed.svgs
    assert svg["role"] == "img" and svg["aria-label"] == "ROC curve with the radiologists' operating points"
    at = _axes(parsed)
    assert at(0, 0)[0] < at(1, 1)[0] and at(0, 0)[1] > at(1, 1)[1]  # rates grow rightwards and upwards
    expected = [at(f, t) for f, t in [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]]
    assert parsed.curve is not None and len(parsed.curve) == len(expected)
    for drawn, (x, y) in zip(parsed.curve, expected):
        assert drawn == pytest.approx((x, y), abs=0.1)
    points = {p["class"].split()[1]: p for p in parsed.points}
    assert set(points) == {"under-curve", "on-or-above-curve"}
    for kind, (fpr, tpr) in [("under-curve", (0.5, 0.5)), ("on-or-above-curve", (1.0, 1.0))]:
        assert (float(points[kind]["cx"]), float(points[kind]["cy"])) == pytest.approx(at(fpr, tpr), abs=0.1)
    assert points["under-curve"]["fill"] != points["on-or-above-curve"]["fill"]
    # The names, the AUC in the legend, the axes' titles and the tick labels are shown.
    assert {"A", "B", f"model (AUC {result['auc']:.3f})", "chance"} <= set(parsed.texts)
    assert "False positive rate (1 − specificity)" in parsed.texts
    assert "True positive rate (sensitivity)" in parsed.texts
    assert {"0", "0.5", "1"} <= set(parsed.texts)


def test_a_large_curve_keeps_its_corners_and_stays_small():
    rng = np.random.default_rng(0)
    truth = rng.random(200_000) < 0.4
    scores = np.clip(truth * 0.3 + rng.normal(0.35, 0.2, truth.size), 0, 1).round(6)
    fpr, tpr, _ = roc.roc_curve(truth, scores)
    assert fpr.size > 100_000
    curve = {"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}, "auc": 0.8, "radiologists": {}}
    page = report.roc_svg(curve)
    parsed = _parse(page)
    assert parsed.curve is not None and 2 <= len(parsed.curve) <= 10_000
    assert len(page) < 200_000
    at = _axes(parsed)
    exact = {(round(x, 1), round(y, 1)) for x, y in (at(f, t) for f, t in zip(fpr, tpr))}
    assert all(
        (round(x, 1), round(y, 1)) in exact for x, y in parsed.curve
    )  # every point drawn is the curve's
    assert parsed.curve[0] == pytest.approx(at(0, 0), abs=0.1) and parsed.curve[-1] == pytest.approx(
        at(1, 1), abs=0.1
    )


def test_an_undefined_curve_draws_no_line():
    curve = {"roc": {"fpr": [None, None], "tpr": [0.0, 1.0]}, "auc": None, "radiologists": {}}
    parsed = _parse(report.roc_svg(curve))
    assert parsed.curve is None and "model (AUC —)" in parsed.texts


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    return score_result(tmp_path_factory.mktemp("report"), 0.85, seed=1)


def _audit(folder: Path) -> dict:
    """A label audit of a few made-up studies."""
    studies = [f"MURA-v1.1/valid/XR_{t}/patient{i:05d}/study1/" for i, t in enumerate(TYPES * 4)]
    gold = folder / "gold.csv"
    gold.write_text("".join(f"{s},{i % 2},{i % 2},{(i // 3) % 2}\n" for i, s in enumerate(studies)))
    labels = folder / "labels.csv"
    labels.write_text("".join(f"{s},{(i // 2) % 2}\n" for i, s in enumerate(studies)))
    return audit_files(labels, gold, Settings(resamples=50))


def test_every_page_has_the_same_skeleton_and_a_strict_csp(result, tmp_path):
    pages = {
        "score": report.to_html(_with_roc(result)),
        "participant": report.participant_html(result),
        "audit": report.audit_to_html(_audit(tmp_path)),
        "leaderboard": leaderboard_html(rank.Board([], None, [], 0.5, "all")),
    }
    heads = {name: page.split("<title>")[0] for name, page in pages.items()}
    assert len(set(heads.values())) == 1, heads
    assert f'<meta http-equiv="Content-Security-Policy" content="{html.CSP}">' in heads["score"]
    assert html.CSP == "default-src 'none'; style-src 'unsafe-inline'"  # no image, font or script source
    for name, page in pages.items():
        assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>\n"), name
        assert _parse(page).images == 0 and "data:" not in page, name
    # The ROC curve is in the score report, inline; the participants' page has none.
    assert len(_parse(pages["score"]).svgs) == 1 and _parse(pages["score"]).curve is not None
    assert "<svg" not in pages["participant"]


def _with_roc(result: dict) -> dict:
    return {**result, "roc": {**_small_roc(), "per_type": {}}}
