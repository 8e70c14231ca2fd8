"""Rendering a score result: JSON (the official keys first), a plain-text table, an HTML page."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from scorer.pipeline import MODEL


def to_json(result: dict) -> str:
    """Stable bytes for the same result: key order as built, no NaN, a final newline."""
    return json.dumps(result, indent=2, allow_nan=False) + "\n"


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(lower: float | None, upper: float | None) -> str:
    return "—" if lower is None or upper is None else f"[{lower:.3f}, {upper:.3f}]"


def _header(result: dict) -> list[str]:
    gold, boot = result["gold"], result["bootstrap"]
    how = {
        "label": "the label column",
        "all": "majority of " + ", ".join(gold["gold_raters"]),
        "given": "majority of " + ", ".join(gold["gold_raters"]) + " (chosen with --gold-raters)",
        "random": "majority of " + ", ".join(gold["gold_raters"]) + f" (drawn with seed {boot['seed']})",
    }[gold["choice"]]
    level = f"{boot['confidence'] * 100:g}%"
    return [
        f"MURA score: {result['n_studies']} studies ({gold['abnormal']} abnormal, "
        f"{gold['normal']} normal); gold standard: {how}",
        f"{level} intervals: percentile bootstrap ({boot['resamples']:,} resamples, seed "
        f"{boot['seed']}) and asymptotic (Fleiss-Cohen-Everitt standard error)",
    ]


def model_rows(result: dict) -> tuple[list[str], list[list[str]]]:
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
                _f(r["kappa"]),
                _ci(r["kappa_lower"], r["kappa_upper"]),
                _ci(r["kappa_asymptotic_lower"], r["kappa_asymptotic_upper"]),
                _f(r["accuracy"]),
                _f(r["sensitivity"]),
                _f(r["specificity"]),
                _f(r["f1"]),
                str(r["tp"]),
                str(r["fp"]),
                str(r["tn"]),
                str(r["fn"]),
            ]
        )
    return head, rows


def radiologist_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    names = list(result["radiologists"])
    head = ["Study type", *names, *(f"{MODEL} − {name}" for name in names)]
    rows = []
    for group in result["groups"]:
        row = [group]
        for name in names:
            r = result["radiologists"][name][group]
            row.append(f"{_f(r['kappa'])} {_ci(r['kappa_lower'], r['kappa_upper'])}")
        for name in names:
            d = result["model_minus_radiologist"][name][group]
            mark = " *" if d["significant"] else ""
            row.append(f"{_f(d['difference'], 3)} {_ci(d['lower'], d['upper'])}{mark}")
        rows.append(row)
    return head, rows


def _text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(head, *rows)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    return [line(head), *(line(row) for row in rows)]


def to_table(result: dict) -> str:
    lines = _header(result) + ["", "Model"] + _text_table(*model_rows(result))
    if result["radiologists"]:
        lines += [
            "",
            "Radiologists (kappa and bootstrap CI) and model − radiologist "
            "(paired over the same resamples; * = the interval excludes 0)",
        ]
        lines += _text_table(*radiologist_rows(result))
        best = result["best_radiologist"]
        if best:
            lines += [
                "",
                f"Best radiologist: {best['name']}, overall kappa {_f(best['kappa'])} "
                f"{_ci(best['lower'], best['upper'])}",
            ]
    if result["notes"]:
        lines += ["", "Notes:", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines) + "\n"


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
tr:last-child td { font-weight: 600; }
"""


def to_html(result: dict, title: str = "MURA score") -> str:
    parts = [f"<p>{html.escape(line)}</p>" for line in _header(result)]
    parts.append("<h2>Model</h2>" + _html_table(*model_rows(result)))
    if result["radiologists"]:
        parts.append(
            "<h2>Radiologists and model − radiologist</h2><p>Kappa with its bootstrap interval; "
            "differences are paired over the same resamples (* = the interval excludes 0).</p>"
            + _html_table(*radiologist_rows(result))
        )
    if result["notes"]:
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"]) + "</ul>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n"
    )
