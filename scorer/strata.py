"""Hidden stratification: what a model detects within each kind of finding.

A kappa over the whole test set can hide a finding the model (or the dataset's labels) mostly
misses: seed 002 found MURA's labels catch 92% of fractures but 60% of degenerative joint
disease. For each stratum of a strata file (`study_path/,finding[;finding...]`) this reports
the stratum's sensitivity -- or specificity, for a stratum whose gold labels are mostly normal
-- for the model and each radiologist, and flags a stratum whose model value is significantly
below the model's value over all studies: the 95% interval of the paired difference, over the
same resamples of all studies, lies below 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from scorer import bootstrap
from scorer.settings import Settings


def stratum_masks(
    studies: Sequence[str], findings: Mapping[str, Sequence[str]]
) -> dict[str, NDArray[np.bool_]]:
    """{stratum: which of `studies` are in it}, strata in name order (a study may be in several)."""
    names = sorted({name for per_study in findings.values() for name in per_study})
    index = {study: i for i, study in enumerate(studies)}
    masks = {name: np.zeros(len(studies), dtype=bool) for name in names}
    for study, per_study in findings.items():
        for name in per_study:
            masks[name][index[study]] = True
    return masks


def score_strata(
    truth: NDArray[np.integer],
    raters: Mapping[str, NDArray[np.integer]],
    masks: Mapping[str, NDArray[np.bool_]],
    settings: Settings,
) -> dict:
    """Per stratum: counts, the headline metric for each rater with its interval, and for the
    first rater (the subject) the paired difference to its value over all studies."""
    names = list(raters)
    subject = names[0]
    groups: dict[str, dict] = {}
    flags: list[str] = []
    for stratum, mask in masks.items():
        # The stratum is the last column: the top half of the cells is "in the stratum".
        cells = bootstrap.joint_cells([truth, *raters.values(), mask])
        drawn = bootstrap.resample_cells(cells, settings.resamples, settings.seed, f"stratum:{stratum}")
        half = cells.size // 2
        inside = bootstrap.confusions(cells[half:], len(names))
        everywhere = bootstrap.confusions(cells[:half] + cells[half:], len(names))
        inside_b = bootstrap.confusions(drawn[:, half:], len(names))
        everywhere_b = bootstrap.confusions(drawn[:, :half] + drawn[:, half:], len(names))

        tp, fp, tn, fn = (int(x) for x in inside[0])
        abnormal, normal = tp + fn, tn + fp
        metric = "sensitivity" if abnormal >= normal else "specificity"
        group: dict = {"n": int(mask.sum()), "abnormal": abnormal, "normal": normal, "metric": metric}
        for i, name in enumerate(names):
            record: dict = dict(zip(("tp", "fp", "tn", "fn"), (int(x) for x in inside[i])))
            for m in ("sensitivity", "specificity"):
                boot, _ = bootstrap.metric_interval(record, m, inside[i], inside_b[:, i], settings.confidence)
                if m == metric and name == subject:
                    overall_boot, _ = bootstrap.metric_interval(
                        record, m, everywhere[i], everywhere_b[:, i], settings.confidence, "all_studies_"
                    )
                    record["difference"] = bootstrap.paired_difference(
                        record[m], record[f"all_studies_{m}"], boot - overall_boot, settings.confidence
                    )
            group[name] = record
        diff = group[subject]["difference"]
        group["flag"] = bool(diff["significant"] and diff["upper"] < 0)
        if group["flag"]:
            s = group[subject]
            flags.append(
                f"hidden stratification: {subject} {metric} on '{stratum}' studies is "
                f"{s[metric]:.3f} [{s[f'{metric}_lower']:.3f}, {s[f'{metric}_upper']:.3f}], "
                f"significantly below its {metric} over all studies, {s[f'all_studies_{metric}']:.3f} "
                f"(difference {diff['difference']:.3f} [{diff['lower']:.3f}, {diff['upper']:.3f}])"
            )
        groups[stratum] = group
    return {"groups": groups, "flags": flags}
