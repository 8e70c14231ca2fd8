"""Auditing a dataset's own labels against a radiologist gold standard.

MURA's labels come from the clinical reports; seed 002 re-read a sample and found them 80%
sensitive and 75% specific overall, and only 60% sensitive to degenerative joint disease
(its Tables 4 and 5). `audit_files` computes the same tables for any `study,label` file:
sensitivity and specificity of the labels per study type and per stratum, with bootstrap
intervals, using the scorer's pipeline with the labels in the place of a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scorer.errors import HostError, examples, hide_labels
from scorer.formats import read_gold, read_strata
from scorer.gold import choose_panel, majority
from scorer.paths import OVERALL, STUDY_TYPES, type_key
from scorer.pipeline import file_sha256, score_group
from scorer.settings import Settings
from scorer.strata import score_strata, stratum_masks

LABELS = "labels"
AUDIT_FORMAT = "mura-kit label audit v1"


def audit_files(
    labels_path: str | Path, gold_path: str | Path, settings: Settings, strata_path: str | Path | None = None
) -> dict:
    settings.check()
    table = read_gold(gold_path)
    panel = choose_panel(table, settings.gold_raters, settings.seed, settings.option("gold_raters"))
    dataset = read_gold(labels_path, what="dataset labels file")
    if len(dataset.raters) != 1:
        raise HostError(
            f"dataset labels file {labels_path}: expected `study,label` rows (one label column, as "
            f"MURA's *_labeled_studies.csv), found {len(dataset.raters)} label columns"
        )
    # Matched on label-blind keys: a labels file spells the label into the path, a
    # radiologists' gold file need not.
    label_of = dict(zip(dataset.keys, dataset.votes[:, 0]))
    missing = [key for key in table.keys if key not in label_of]
    if missing:
        raise HostError(
            f"dataset labels file {labels_path} has no label for {len(missing)} of the "
            f"{len(table.studies)} gold studies ({examples(map(hide_labels, missing))}); audit "
            "with the labels file the gold studies were drawn from"
        )
    findings = read_strata(strata_path, table.studies) if strata_path is not None else None
    labels = np.array([label_of[key] for key in table.keys], dtype=np.int8)
    truth = majority(table, panel.gold)

    groups = {type_key(t): np.array(table.types) == t for t in STUDY_TYPES}
    groups[OVERALL] = np.ones(len(labels), dtype=bool)
    result: dict = {
        "format": AUDIT_FORMAT,
        "n_studies": len(table.studies),
        "labelled_studies": len(label_of),
        "gold": {"gold_raters": list(panel.gold), "choice": panel.choice},
        "bootstrap": {
            "resamples": settings.resamples,
            "seed": settings.seed,
            "confidence": settings.confidence,
        },
        "groups": {},
        "notes": [],
    }
    for name, mask in groups.items():
        scored = score_group(truth[mask], {LABELS: labels[mask]}, f"audit:{name}", settings)
        result["groups"][name] = scored["raters"][LABELS]
        result["notes"] += scored["notes"]
    if findings is not None:
        strata = score_strata(truth, {LABELS: labels}, stratum_masks(table.studies, findings), settings)
        result["strata"] = {
            name: group[LABELS] | {"n": group["n"], "abnormal": group["abnormal"], "normal": group["normal"]}
            for name, group in strata["groups"].items()
        }
        result["notes"] += strata["flags"]
    result["inputs"] = {
        "labels": {"file": str(labels_path), "sha256": file_sha256(labels_path)},
        "gold": {"file": str(gold_path), "sha256": file_sha256(gold_path)},
    }
    return result
