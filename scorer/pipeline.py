"""Scoring as a fixed pipeline: load -> validate -> build gold -> count -> metrics -> intervals.

Each step is a plain function; `score_files` strings them together and returns the result as a
plain dict (the JSON that `mura score --format json` prints), which report.py renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from scorer import bootstrap, metrics, roc
from scorer.files import file_sha256
from scorer.formats import PROBABILITIES, RaterTable, read_gold, read_predictions, read_strata
from scorer.gold import Panel, choose_panel, majority, reads
from scorer.paths import OVERALL, STUDY_TYPES, type_key
from scorer.settings import Settings
from scorer.strata import score_strata, stratum_masks
from scorer.validate import align

RESULT_FORMAT = "mura-kit score v1"
MODEL = "model"


def score_files(
    gold_path: str | Path,
    predictions_path: str | Path,
    settings: Settings,
    *,
    probabilities_path: str | Path | None = None,
    strata_path: str | Path | None = None,
) -> dict:
    """Score a predictions file against a gold file. Raises HostError or ParticipantError.

    With `probabilities_path` (the submission's per-study probabilities) the result also has
    `roc`: AUC with its interval and the radiologists' operating points. With `strata_path`
    (the organiser's `study,finding[;finding]` file) it has `strata`: hidden stratification.
    """
    settings.check()
    # The organiser's files first: if one is broken, the organiser must hear of it, not the
    # participant.
    table = read_gold(gold_path)
    panel = choose_panel(table, settings.gold_raters, settings.seed, settings.option("gold_raters"))
    findings = read_strata(strata_path, table.studies) if strata_path is not None else None
    model = align(read_predictions(predictions_path), table.studies)
    probabilities = None
    if probabilities_path is not None:
        submitted = read_predictions(probabilities_path, PROBABILITIES)
        probabilities = align(submitted, table.studies, PROBABILITIES)

    result = score_table(table, panel, model, settings)
    truth, raters = rater_reads(table, panel, model)
    if findings is not None:
        result["strata"] = score_strata(truth, raters, stratum_masks(table.studies, findings), settings)
        result["strata"]["unstratified"] = len(table.studies) - len(findings)
        result["notes"] += result["strata"]["flags"]
    if probabilities is not None:
        result["roc"] = score_probabilities(table, truth, raters, probabilities, settings)

    inputs = {"gold": gold_path, "predictions": predictions_path}
    inputs.update({"probabilities": probabilities_path} if probabilities_path is not None else {})
    inputs.update({"strata": strata_path} if strata_path is not None else {})
    result["inputs"] = {
        name: {"file": str(path), "sha256": file_sha256(path)} for name, path in inputs.items()
    }
    return result


def rater_reads(
    table: RaterTable, panel: Panel, model: NDArray[np.integer]
) -> tuple[NDArray[np.int8], dict[str, NDArray[np.int8]]]:
    """The gold standard, and the reads of the model then of each radiologist."""
    raters = {MODEL: np.asarray(model, dtype=np.int8)}
    raters.update({name: reads(table, name) for name in panel.radiologists})
    return majority(table, panel.gold), raters


def score_probabilities(
    table: RaterTable,
    truth: NDArray,
    raters: Mapping[str, NDArray],
    probabilities: NDArray,
    settings: Settings,
) -> dict:
    """ROC analysis overall (curve, AUC, radiologists' points) and AUC per study type."""
    radiologists = {name: reads for name, reads in raters.items() if name != MODEL}
    args = (settings.resamples, settings.seed, settings.confidence)
    report = roc.roc_report(truth, probabilities, radiologists, *args)
    types = np.array(table.types)
    report["per_type"] = {}
    for t in STUDY_TYPES:
        mask = types == t
        per_type = roc.roc_report(truth[mask], probabilities[mask], {}, *args, group=type_key(t))
        report["per_type"][type_key(t)] = {k: per_type[k] for k in ("auc", "auc_lower", "auc_upper")}
    return report


def score_table(table: RaterTable, panel: Panel, model: NDArray[np.integer], settings: Settings) -> dict:
    """Score the model's reads (aligned with `table.studies`) and the panel's radiologists."""
    truth, raters = rater_reads(table, panel, model)
    groups = {OVERALL: np.ones(len(table.studies), dtype=bool)}
    types = np.array(table.types)
    groups.update({type_key(t): types == t for t in STUDY_TYPES})

    scored = {
        name: score_group(truth[mask], {r: v[mask] for r, v in raters.items()}, name, settings)
        for name, mask in groups.items()
    }

    order = [type_key(t) for t in STUDY_TYPES] + [OVERALL]
    result: dict = {}
    for group in order:  # the official evaluate.py keys, first
        record = scored[group]["raters"][MODEL]
        result[f"{group}_Mean"] = record["kappa"]
        result[f"{group}_Lower"] = record["kappa_lower"]
        result[f"{group}_Upper"] = record["kappa_upper"]
    result["format"] = RESULT_FORMAT
    result["n_studies"] = len(table.studies)
    result["gold"] = {
        "raters": list(table.raters),
        "gold_raters": list(panel.gold),
        "choice": panel.choice,
        "radiologists": list(panel.radiologists),
        "abnormal": int(truth.sum()),
        "normal": int(len(truth) - truth.sum()),
    }
    result["bootstrap"] = {
        "method": "percentile; multinomial resampling of joint confusion cells",
        "resamples": settings.resamples,
        "seed": settings.seed,
        "confidence": settings.confidence,
    }
    result["groups"] = order
    result["model"] = {g: scored[g]["raters"][MODEL] for g in order}
    result["radiologists"] = {r: {g: scored[g]["raters"][r] for g in order} for r in panel.radiologists}
    result["model_minus_radiologist"] = {
        r: {g: scored[g]["differences"][r] for g in order} for r in panel.radiologists
    }
    result["best_radiologist"] = best_radiologist(result["radiologists"])
    result["notes"] = [note for g in order for note in scored[g]["notes"]]
    return result


def score_group(
    truth: NDArray[np.integer], raters: Mapping[str, NDArray[np.integer]], group: str, settings: Settings
) -> dict:
    """Metrics, bootstrap and asymptotic intervals for each rater of one group, and the paired
    difference in kappa between the first rater (the subject: the model, or the labels being
    audited) and each of the others."""
    names = list(raters)
    subject = names[0]
    cells = bootstrap.joint_cells([truth, *raters.values()])
    observed = bootstrap.confusions(cells, len(names))  # (raters, 4)
    drawn = bootstrap.resample_cells(cells, settings.resamples, settings.seed, group)
    resampled = bootstrap.confusions(drawn, len(names))  # (resamples, raters, 4)

    z = metrics.normal_quantile(settings.confidence)
    records: dict[str, dict] = {}
    kappas: dict[str, NDArray[np.float64]] = {}
    notes: list[str] = []
    for i, name in enumerate(names):
        tp, fp, tn, fn = (int(x) for x in observed[i])
        record: dict = {"n": tp + fp + tn + fn, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
        for metric in metrics.METRICS:
            boot, undefined = bootstrap.metric_interval(
                record, metric, observed[i], resampled[:, i], settings.confidence
            )
            reason = metrics.undefined_reason(metric, tp, fp, tn, fn)
            if reason and (metric == "kappa" or name == subject):
                notes.append(f"{group}: {metric} of {name} is undefined ({reason}); reported as null")
            if metric == "kappa":
                kappas[name] = boot
                record["kappa_undefined_resamples"] = undefined
                if undefined and not reason:
                    notes.append(
                        f"{group}: kappa of {name} is undefined in {undefined} of "
                        f"{settings.resamples} resamples; its interval uses the others"
                    )
        se = float(metrics.kappa_standard_error(tp, fp, tn, fn))
        record["kappa_se"] = metrics.defined(se)
        kappa = record["kappa"]
        record["kappa_asymptotic_lower"] = None if kappa is None else max(-1.0, kappa - z * se)
        record["kappa_asymptotic_upper"] = None if kappa is None else min(1.0, kappa + z * se)
        records[name] = record

    differences = {
        name: bootstrap.paired_difference(
            records[subject]["kappa"],
            records[name]["kappa"],
            kappas[subject] - kappas[name],
            settings.confidence,
        )
        for name in names[1:]
    }
    return {"raters": records, "differences": differences, "notes": notes}


def best_radiologist(radiologists: Mapping[str, Mapping[str, dict]]) -> dict | None:
    """The radiologist with the highest overall kappa: the leaderboard's human baseline."""
    scored = [
        (rec[OVERALL]["kappa"], name)
        for name, rec in radiologists.items()
        if rec[OVERALL]["kappa"] is not None
    ]
    if not scored:
        return None
    kappa, name = max(scored, key=lambda item: item[0])  # the first listed wins a tie
    overall = radiologists[name][OVERALL]
    return {"name": name, "kappa": kappa, "lower": overall["kappa_lower"], "upper": overall["kappa_upper"]}


__all__: Sequence[str] = ["score_files", "score_group", "score_table"]
