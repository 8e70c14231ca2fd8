"""Rendering score and audit results: JSON (the official keys first), a plain-text table, an
HTML page. Both the text and the HTML come from the same list of sections."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from scorer.paths import OVERALL
from scorer.pipeline import MODEL


@dataclass
class Section:
    title: str
    head: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def to_json(result: dict) -> str:
    """Stable bytes for the same result: key order as built, no NaN, a final newline."""
    return json.dumps(result, indent=2, allow_nan=False) + "\n"


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(lower: float | None, upper: float | None) -> str:
    return "—" if lower is None or upper is None else f"[{lower:.3f}, {upper:.3f}]"


def _with_ci(record: dict, metric: str) -> str:
    return f"{_f(record[metric])} {_ci(record[f'{metric}_lower'], record[f'{metric}_upper'])}"


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
            row.append(f"{_f(d['difference'])} {_ci(d['lower'], d['upper'])}{mark}")
        rows.append(row)
    notes = []
    best = result["best_radiologist"]
    if best:
        notes.append(
            f"Best radiologist: {best['name']}, overall kappa {_f(best['kappa'])} "
            f"{_ci(best['lower'], best['upper'])}"
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
        d = m["difference"]
        rows.append(
            [
                stratum,
                str(group["n"]),
                str(group["abnormal"]),
                metric,
                _with_ci(m, metric),
                _f(m[f"all_studies_{metric}"]),
                f"{_f(d['difference'])} {_ci(d['lower'], d['upper'])}{' !' if group['flag'] else ''}",
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
        f"{name}: operating point FPR {_f(p['fpr'])}, TPR {_f(p['tpr'])}, "
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


def _html_table(section: Section) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in section.head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in section.rows
    )
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in section.notes)
    table = f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    return f"<h2>{html.escape(section.title)}</h2>{table}{notes}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 80rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
img { max-width: 36rem; }
"""


def _page(title: str, header: list[str], sections: list[Section], notes: list[str], extra: str = "") -> str:
    parts = [f"<p>{html.escape(line)}</p>" for line in header]
    parts += [_html_table(section) for section in sections]
    parts.append(extra)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n"
    )


def to_html(result: dict, title: str = "MURA score") -> str:
    figure = ""
    if "roc" in result:
        png = base64.b64encode(roc_png(result["roc"])).decode("ascii")
        alt = "ROC curve with the radiologists' operating points"
        figure = f'<h2>ROC curve</h2><img alt="{alt}" src="data:image/png;base64,{png}">'
    return _page(title, _header(result), score_sections(result), _notes(result), figure)


def roc_png(roc: dict) -> bytes:
    """The model's ROC curve with each radiologist's operating point, as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(
        roc["roc"]["fpr"], roc["roc"]["tpr"], color="#1f5fa8", lw=2, label=f"model (AUC {_f(roc['auc'])})"
    )
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    for name, p in roc["radiologists"].items():
        ax.plot(p["fpr"], p["tpr"], "o", color="#c0392b" if p["under_curve"] else "#27ae60")
        ax.annotate(name, (p["fpr"], p["tpr"]), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set(
        xlabel="False positive rate (1 − specificity)",
        ylabel="True positive rate (sensitivity)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC against the gold standard",
    )
    ax.legend(loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


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
        [group, str(r["n"]), _f(r["kappa"]), _ci(r["kappa_lower"], r["kappa_upper"])]
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
