"""Scoring as a fixed pipeline: load -> validate -> build gold -> count -> metrics -> intervals.

Each step is a plain function; `score_files` strings them together and returns the result as a
plain dict (the JSON that `mura score --format json` prints), which report.py renders.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from scorer import bootstrap, metrics
from scorer.errors import HostError
from scorer.formats import RaterTable, read_gold, read_predictions
from scorer.gold import Panel, choose_panel, majority, reads
from scorer.paths import OVERALL, STUDY_TYPES, type_key
from scorer.validate import align

RESULT_FORMAT = "mura-kit score v1"
MODEL = "model"


@dataclass(frozen=True)
class Settings:
    gold_raters: tuple[str, ...] | None = None  # None: all, the label, or 3 drawn with `seed`
    seed: int = 0
    resamples: int = 10_000
    confidence: float = 0.95

    def check(self) -> None:
        if self.resamples < 1:
            raise HostError(f"--resamples must be at least 1, found {self.resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise HostError(f"--confidence must lie strictly between 0 and 1, found {self.confidence}")
        if self.seed < 0:
            raise HostError(f"--seed must be a non-negative integer, found {self.seed}")


def score_files(gold_path: str | Path, predictions_path: str | Path, settings: Settings) -> dict:
    """Score a predictions file against a gold file. Raises HostError or ParticipantError."""
    settings.check()
    # The gold file first: if it is broken, the organiser must hear of it, not the participant.
    table = read_gold(gold_path)
    panel = choose_panel(table, settings.gold_raters, settings.seed)
    predictions = read_predictions(predictions_path)
    model = align(predictions, table.studies)
    result = score_table(table, panel, model, settings)
    result["inputs"] = {
        "gold": {"file": str(gold_path), "sha256": file_sha256(gold_path)},
        "predictions": {"file": str(predictions_path), "sha256": file_sha256(predictions_path)},
    }
    return result


def score_table(table: RaterTable, panel: Panel, model: NDArray[np.integer], settings: Settings) -> dict:
    """Score the model's reads (aligned with `table.studies`) and the panel's radiologists."""
    truth = majority(table, panel.gold)
    raters = {MODEL: np.asarray(model, dtype=np.int8)}
    raters.update({name: reads(table, name) for name in panel.radiologists})
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
    """Metrics, bootstrap and asymptotic intervals and paired differences for one group."""
    names = list(raters)
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
        for metric, fn_ in metrics.METRICS.items():
            value = float(fn_(tp, fp, tn, fn))
            boot = fn_(*np.moveaxis(resampled[:, i, :], -1, 0))
            lower, upper, undefined = bootstrap.percentile_interval(boot, settings.confidence)
            record[metric] = _num(value)
            record[f"{metric}_lower"] = _num(lower)
            record[f"{metric}_upper"] = _num(upper)
            reason = metrics.undefined_reason(metric, tp, fp, tn, fn)
            if reason and (metric == "kappa" or name == MODEL):
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
        record["kappa_se"] = _num(se)
        kappa = record["kappa"]
        record["kappa_asymptotic_lower"] = None if kappa is None else max(-1.0, kappa - z * se)
        record["kappa_asymptotic_upper"] = None if kappa is None else min(1.0, kappa + z * se)
        records[name] = record

    differences = {}
    for name in names[1:]:
        model_k, rad_k = records[MODEL]["kappa"], records[name]["kappa"]
        if model_k is None or rad_k is None:
            differences[name] = {"difference": None, "lower": None, "upper": None, "significant": None}
            continue
        lower, upper, _ = bootstrap.percentile_interval(kappas[MODEL] - kappas[name], settings.confidence)
        significant = None if math.isnan(lower) else bool(lower > 0 or upper < 0)
        differences[name] = {
            "difference": model_k - rad_k,
            "lower": _num(lower),
            "upper": _num(upper),
            "significant": significant,
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


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def rater_names(settings_value: str | None) -> tuple[str, ...] | None:
    """`Rad1,Rad4,Rad5` -> ('Rad1', 'Rad4', 'Rad5')."""
    if not settings_value:
        return None
    names = tuple(name.strip() for name in settings_value.split(",") if name.strip())
    return names or None


__all__: Sequence[str] = ["Settings", "score_files", "score_group", "score_table"]
