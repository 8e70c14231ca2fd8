"""Rendering score and audit results: JSON (the official keys first), a plain-text table, an
HTML page (scorer.html) with the ROC curve as inline SVG (scorer.svg). Both the text and the
HTML come from the same list of sections."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from scorer.html import escape, interval, number, page, table
from scorer.paths import OVERALL
from scorer.pipeline import MODEL
from scorer.svg import (
    MODEL_COLOUR,
    RADIOLOGIST_COLOUR,
    Scale,
    coordinate,
    line,
    svg,
    text,
    ticks,
    x_axis,
    y_axis,
)


@dataclass
class Section:
    title: str
    head: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def to_json(result: dict) -> str:
    """Stable bytes for the same result: key order as built, no NaN, a final newline."""
    return json.dumps(result, indent=2, allow_nan=False) + "\n"


def _with_ci(record: dict, metric: str) -> str:
    return f"{number(record[metric])} {interval(record[f'{metric}_lower'], record[f'{metric}_upper'])}"


def _header(result: dict) -> list[str]:
    gold, boot = result["gold"], result["bootstrap"]
    raters = ", ".join(gold["gold_raters"])
    how = {
        "label": "the label column",
        "all": f"majority of {raters}",
        "given": f"majority of {raters} (chosen with --gold-raters)",
        "random": f"majority of {raters} (drawn with seed {boot['seed']})",
    }[gold["choice"]]
    level = f"{boot['confidence'] * 100:g}%"
    return [
        f"MURA score: {result['n_studies']} studies ({gold['abnormal']} abnormal, "
        f"{gold['normal']} normal); gold standard: {how}",
        f"{level} intervals: percentile bootstrap ({boot['resamples']:,} resamples, seed "
        f"{boot['seed']}) and asymptotic (Fleiss-Cohen-Everitt standard error)",
    ]


def model_section(result: dict) -> Section:
    head = [
        "Study type",
        "n",
        "Kappa",
        "Bootstrap CI",
        "Asymptotic CI",
        "Accuracy",
        "Sensitivity",
        "Specificity",
        "F1",
        "TP",
        "FP",
        "TN",
        "FN",
    ]
    rows = []
    for group in result["groups"]:
        r = result["model"][group]
        rows.append(
            [
                group,
                str(r["n"]),
                number(r["kappa"]),
                interval(r["kappa_lower"], r["kappa_upper"]),
                interval(r["kappa_asymptotic_lower"], r["kappa_asymptotic_upper"]),
                number(r["accuracy"]),
                number(r["sensitivity"]),
                number(r["specificity"]),
                number(r["f1"]),
                str(r["tp"]),
                str(r["fp"]),
                str(r["tn"]),
                str(r["fn"]),
            ]
        )
    return Section("Model", head, rows)


def radiologist_section(result: dict) -> Section:
    names = list(result["radiologists"])
    head = ["Study type", *names, *(f"{MODEL} − {name}" for name in names)]
    rows = []
    for group in result["groups"]:
        row = [group, *(_with_ci(result["radiologists"][name][group], "kappa") for name in names)]
        for name in names:
            d = result["model_minus_radiologist"][name][group]
            mark = " *" if d["significant"] else ""
            row.append(f"{number(d['difference'])} {interval(d['lower'], d['upper'])}{mark}")
        rows.append(row)
    notes = []
    best = result["best_radiologist"]
    if best:
        notes.append(
            f"Best radiologist: {best['name']}, overall kappa {number(best['kappa'])} "
            f"{interval(best['lower'], best['upper'])}"
        )
    return Section(
        "Radiologists (kappa and bootstrap CI) and model − radiologist "
        "(paired over the same resamples; * = the interval excludes 0)",
        head,
        rows,
        notes,
    )


def strata_section(result: dict) -> Section:
    strata = result["strata"]
    names = list(result["radiologists"])
    head = ["Stratum", "n", "Abnormal", "Metric", "Model", "All studies", "Difference", *names]
    rows = []
    for stratum, group in strata["groups"].items():
        metric, m = group["metric"], group[MODEL]
        d, flag = m["difference"], " !" if group["flag"] else ""
        rows.append(
            [
                stratum,
                str(group["n"]),
                str(group["abnormal"]),
                metric,
                _with_ci(m, metric),
                number(m[f"all_studies_{metric}"]),
                f"{number(d['difference'])} {interval(d['lower'], d['upper'])}{flag}",
                *(_with_ci(group[name], metric) for name in names),
            ]
        )
    notes = [f"{strata['unstratified']} studies have no stratum."]
    notes += [f"WARNING: {flag}" for flag in strata["flags"]]
    return Section(
        "Strata: the model's sensitivity (specificity for a mostly normal stratum) within each "
        "stratum, against its value over all studies (! = significantly below)",
        head,
        rows,
        notes,
    )


def roc_section(result: dict) -> Section:
    r = result["roc"]
    rows = [[OVERALL, _with_ci(r, "auc")]]
    rows += [[group, _with_ci(v, "auc")] for group, v in r["per_type"].items()]
    notes = [
        f"{name}: operating point FPR {number(p['fpr'])}, TPR {number(p['tpr'])}, "
        f"{'under' if p['under_curve'] else 'on or above'} the model's ROC curve"
        for name, p in r["radiologists"].items()
    ]
    if r["radiologists"]:
        notes.append(
            f"Radiologists under the ROC curve: {r['radiologists_under_curve']} of {len(r['radiologists'])}"
        )
    return Section("AUC of the submitted probabilities (bootstrap CI)", ["Study type", "AUC"], rows, notes)


def score_sections(result: dict) -> list[Section]:
    sections = [model_section(result)]
    if result["radiologists"]:
        sections.append(radiologist_section(result))
    if "strata" in result:
        sections.append(strata_section(result))
    if "roc" in result:
        sections.append(roc_section(result))
    return sections


def _text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(head, *rows)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    return [line(head), *(line(row) for row in rows)]


def _text(header: list[str], sections: list[Section], notes: list[str]) -> str:
    lines = list(header)
    for section in sections:
        lines += ["", section.title, *_text_table(section.head, section.rows), *section.notes]
    if notes:
        lines += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def to_table(result: dict) -> str:
    return _text(_header(result), score_sections(result), _notes(result))


def _notes(result: dict) -> list[str]:
    # Stratification flags are shown with their table already.
    flags = set(result.get("strata", {}).get("flags", []))
    return [note for note in result["notes"] if note not in flags]


def _html_section(section: Section) -> str:
    rows = ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in section.rows]
    notes = "".join(f"<p>{escape(n)}</p>" for n in section.notes)
    return f"<h2>{escape(section.title)}</h2>{table(section.head, rows)}{notes}"


# The report's own rules, beside those every page has (scorer.html).
_STYLE = """body { max-width: 80rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
"""


def _page(title: str, header: list[str], sections: list[Section], notes: list[str], extra: str = "") -> str:
    parts = [f"<p>{escape(line)}</p>" for line in header]
    parts += [_html_section(section) for section in sections]
    if extra:
        parts.append(extra)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    return page(title, parts, _STYLE)


def to_html(result: dict, title: str = "MURA score") -> str:
    figure = ""
    if "roc" in result:
        figure = f'<h2>ROC curve</h2><figure id="roc">{roc_svg(result["roc"])}</figure>'
    return _page(title, _header(result), score_sections(result), _notes(result), figure)


# --- the ROC curve ----------------------------------------------------------------------------

ROC_WIDTH, ROC_HEIGHT = 500, 504
ROC_LEFT, ROC_RIGHT, ROC_TOP, ROC_BOTTOM = 60, 484, 36, 460  # the plot's square
ABOVE_COLOUR = "#27ae60"  # a radiologist on or above the curve (under it: RADIOLOGIST_COLOUR)
CHANCE = 'stroke="#999" stroke-width="1" stroke-dasharray="5 4"'
TITLE = "ROC against the gold standard"


def roc_svg(roc: dict) -> str:
    """The model's ROC curve with the chance line and each radiologist's operating point (red
    under the curve, green on or above it), as an <svg> element."""
    marks = ticks(0.0, 1.0)
    x = Scale(0.0, 1.0, ROC_LEFT, ROC_RIGHT)
    y = Scale(0.0, 1.0, ROC_BOTTOM, ROC_TOP)
    parts = [
        text(coordinate((ROC_LEFT + ROC_RIGHT) / 2), 22, TITLE, "middle", 'font-weight="bold"'),
        x_axis(x, marks, ROC_TOP, ROC_BOTTOM, "False positive rate (1 − specificity)", ROC_HEIGHT - 6),
        y_axis(y, marks, ROC_LEFT, ROC_RIGHT, "True positive rate (sensitivity)", ROC_LEFT - 40),
        line(x.at(0), y.at(0), x.at(1), y.at(1), f'class="chance" {CHANCE}'),
    ]
    points = curve_points(roc["roc"]["fpr"], roc["roc"]["tpr"], x, y)
    if points:
        parts.append(
            f'<polyline class="roc" points="{points}" fill="none" stroke="{MODEL_COLOUR}" stroke-width="2" '
            'stroke-linejoin="round"/>'
        )
    parts += [_operating_point(name, p, x, y) for name, p in roc["radiologists"].items()]
    parts.append(_roc_legend(f"model (AUC {number(roc['auc'])})", bool(roc["radiologists"])))
    return svg(ROC_WIDTH, ROC_HEIGHT, "ROC curve with the radiologists' operating points", parts)


def curve_points(fpr: Sequence[float | None], tpr: Sequence[float | None], x: Scale, y: Scale) -> str:
    """A polyline's `points` for the curve: each point once, to 0.1 px, leaving out the middle of
    straight horizontal and vertical runs; so a test set of a million studies (a million points)
    draws at most a few thousand corners. Undefined (null) rates are left out."""
    kept: list[tuple[str, str]] = []
    for f, t in zip(fpr, tpr):
        if f is None or t is None:
            continue
        point = (x.at(f), y.at(t))
        if kept and point == kept[-1]:
            continue
        straight = len(kept) >= 2 and (
            kept[-2][0] == kept[-1][0] == point[0] or kept[-2][1] == kept[-1][1] == point[1]
        )
        if straight:
            kept[-1] = point
        else:
            kept.append(point)
    return " ".join(f"{a},{b}" for a, b in kept)


def _operating_point(name: str, point: dict, x: Scale, y: Scale) -> str:
    """A radiologist's point (its rates on hover) and name."""
    under = point["under_curve"]
    hover = (
        f"{name}: FPR {number(point['fpr'])}, TPR {number(point['tpr'])}, "
        f"{'under' if under else 'on or above'} the model's ROC curve"
    )
    cx, cy = x(point["fpr"]), y(point["tpr"])
    colour = RADIOLOGIST_COLOUR if under else ABOVE_COLOUR
    kind = "under-curve" if under else "on-or-above-curve"
    return (
        f'<circle class="operating-point {kind}" cx="{coordinate(cx)}" cy="{coordinate(cy)}" r="4" '
        f'fill="{colour}"><title>{escape(hover)}</title></circle>'
        + text(coordinate(cx + 6), coordinate(cy + 14), escape(name))
    )


def _roc_legend(model: str, radiologists: bool) -> str:
    """A legend in the plot's lower right corner: the curve, chance and, with radiologists,
    the two colours of their points."""
    samples = [
        (line(0, 0, 24, 0, f'stroke="{MODEL_COLOUR}" stroke-width="2"'), model),
        (line(0, 0, 24, 0, CHANCE), "chance"),
    ]
    if radiologists:
        samples += [
            (f'<circle cx="12" cy="0" r="4" fill="{RADIOLOGIST_COLOUR}"/>', "radiologist under the curve"),
            (f'<circle cx="12" cy="0" r="4" fill="{ABOVE_COLOUR}"/>', "radiologist on or above the curve"),
        ]
    width, row = 250, 18
    height = row * len(samples) + 8
    left, top = ROC_RIGHT - 8 - width, ROC_BOTTOM - 8 - height
    parts = [f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="#fff" stroke="#ccc"/>']
    for i, (sample, label) in enumerate(samples):
        at = top + 4 + row * i + row // 2
        parts.append(
            f'<g transform="translate({left + 8} {at})">{sample}</g>' + text(left + 40, at + 4, escape(label))
        )
    return '<g class="legend">' + "".join(parts) + "</g>"


# --- the participants' view (Codabench's detailed_results.html) ------------------------------
# Participants read a platform's scoring output. Beside the official keys it shows kappa with its
# bootstrap interval and the comparison with the radiologists, nothing more: confusion counts,
# gold class counts, accuracy, sensitivity, specificity and F1 would each, with the
# participant's own predictions, give away how many studies of each type are abnormal; the
# asymptotic interval is a closed form of the confusion table too, the undefined-metric notes
# name a class, and the seed would let one replay the bootstrap. The organisers keep the full
# report (`mura score`).


def participant_sections(result: dict) -> list[Section]:
    head = ["Study type", "n", "Kappa", "Bootstrap CI"]
    rows = [
        [group, str(r["n"]), number(r["kappa"]), interval(r["kappa_lower"], r["kappa_upper"])]
        for group, r in ((g, result["model"][g]) for g in result["groups"])
    ]
    sections = [Section("Model", head, rows)]
    if result["radiologists"]:
        sections.append(radiologist_section(result))
    return sections


def _participant_header(result: dict) -> list[str]:
    gold, boot = result["gold"], result["bootstrap"]
    how = "the label column" if gold["choice"] == "label" else f"majority of {', '.join(gold['gold_raters'])}"
    return [
        f"MURA score: {result['n_studies']} studies; gold standard: {how}",
        f"{boot['confidence'] * 100:g}% intervals: percentile bootstrap ({boot['resamples']:,} resamples)",
    ]


def _participant_notes(result: dict) -> list[str]:
    """Which kappas are undefined, without the reason (the reason names a gold class)."""
    raters = {MODEL: result["model"], **result["radiologists"]}
    return [
        f"{group}: kappa of {name} is undefined; reported as null"
        for group in result["groups"]
        for name, records in raters.items()
        if records[group]["kappa"] is None
    ]


def participant_html(result: dict, title: str = "MURA: detailed results") -> str:
    """The report a participant may see (see above); strata and ROC are the organisers'."""
    return _page(title, _participant_header(result), participant_sections(result), _participant_notes(result))


# --- the label audit --------------------------------------------------------------------------


def audit_sections(result: dict) -> list[Section]:
    head = ["Study type", "n", "Abnormal (gold)", "Sensitivity", "Specificity", "Kappa"]
    rows = []
    for group in [OVERALL, *(g for g in result["groups"] if g != OVERALL)]:
        r = result["groups"][group]
        rows.append(
            [
                group,
                str(r["n"]),
                str(r["tp"] + r["fn"]),
                _with_ci(r, "sensitivity"),
                _with_ci(r, "specificity"),
                _with_ci(r, "kappa"),
            ]
        )
    sections = [Section("The dataset's labels against the gold standard, by study type", head, rows)]
    if "strata" in result:
        srows = [
            [name, str(s["n"]), str(s["abnormal"]), _with_ci(s, "sensitivity"), _with_ci(s, "specificity")]
            for name, s in result["strata"].items()
        ]
        shead = ["Stratum", "n", "Abnormal (gold)", "Sensitivity", "Specificity"]
        sections.append(Section("By stratum (finding)", shead, srows))
    return sections


def _audit_header(result: dict) -> list[str]:
    boot = result["bootstrap"]
    return [
        f"Label audit: {result['n_studies']} gold studies (of {result['labelled_studies']} labelled); "
        f"gold standard: majority of {', '.join(result['gold']['gold_raters'])}",
        f"{boot['confidence'] * 100:g}% percentile bootstrap intervals ({boot['resamples']:,} resamples, "
        f"seed {boot['seed']})",
    ]


def audit_to_table(result: dict) -> str:
    return _text(_audit_header(result), audit_sections(result), result["notes"])


def audit_to_html(result: dict) -> str:
    return _page("MURA label audit", _audit_header(result), audit_sections(result), result["notes"])
