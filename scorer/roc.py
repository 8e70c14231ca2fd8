"""ROC analysis of a submission's per-study probabilities against the gold standard.

AUC with a percentile bootstrap interval, the ROC curve, and each radiologist's operating
point with whether it lies under the curve -- the count CheXpert's competition ranked by.
The bootstrap draws, for each resample, how many times each study is picked, and computes
the weighted Mann-Whitney AUC of all resamples at once.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scorer import bootstrap


def roc_curve(truth: ArrayLike, scores: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) to (1, 1); a study is
    called abnormal when its score >= threshold. Undefined (NaN rates) without both classes.

    >>> fpr, tpr, _ = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y = np.asarray(truth, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    thresholds = np.unique(s)[::-1]
    # For each threshold, how many of each class score at or above it.
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([[0.0], tp / pos.size]) if pos.size else np.full(thresholds.size + 1, np.nan)
        fpr = np.concatenate([[0.0], fp / neg.size]) if neg.size else np.full(thresholds.size + 1, np.nan)
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def weighted_auc(truth: ArrayLike, scores: ArrayLike, weights: NDArray) -> NDArray[np.float64]:
    """The AUC (probability that an abnormal study outscores a normal one, ties counting half)
    for each row of `weights` (resamples x studies: how often each study is drawn)."""
    y = np.asarray(truth, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    w = np.atleast_2d(weights)
    if (order != np.arange(order.size)).any():
        s, y, w = s[order], y[order], w[:, order]
    # Normal weight before each position, and where each study's run of tied scores starts/ends.
    neg_before = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w * ~y, axis=1)], axis=1)
    first = np.searchsorted(s, s, side="left")
    last = np.searchsorted(s, s, side="right")
    below = neg_before[:, first]  # normal weight strictly below
    tied = neg_before[:, last] - below  # normal weight at the same score
    pos = w * y
    wins = (pos * (below + 0.5 * tied)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (pos.sum(axis=1) * (w * ~y).sum(axis=1))


def auc(truth: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; NaN unless both classes are present.

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(truth)
    return float(weighted_auc(y, scores, np.ones((1, y.size)))[0])


def bootstrap_auc(truth: ArrayLike, scores: ArrayLike, resamples: int, seed: int, group: str) -> NDArray:
    """`resamples` bootstrap AUCs (NaN where a resample lacks a class)."""
    # Studies are exchangeable under the resampling, so draw the weights in score order.
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    y, scores = np.asarray(truth)[order], np.asarray(scores, dtype=np.float64)[order]
    rng = bootstrap.group_rng(seed, f"auc:{group}")
    out = np.empty(resamples)
    # In chunks, to keep the (resamples x studies) weight matrix small for large test sets.
    chunk = max(1, 2_000_000 // max(y.size, 1))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        # How often each study is drawn: Multinomial(n, 1/n) per row, counted from indices.
        picks = rng.integers(0, y.size, size=(size, y.size)) + y.size * np.arange(size)[:, None]
        weights = np.bincount(picks.ravel(), minlength=size * y.size).reshape(size, y.size)
        out[start : start + size] = weighted_auc(y, scores, weights)
    return out


def under_curve(fpr: NDArray, tpr: NDArray, point: tuple[float, float]) -> bool:
    """Whether an operating point (fpr, tpr) lies strictly below the ROC curve, whose points
    are joined by straight lines (where the curve is vertical, its highest point counts)."""
    x, y = point
    order = np.lexsort((tpr, fpr))
    xs, ys = fpr[order], tpr[order]
    right = np.searchsorted(xs, x, side="right")
    at_or_left = ys[:right].max() if right else 0.0
    if right < xs.size and right > 0 and xs[right - 1] < x:
        # Between two curve points: interpolate.
        x0, y0, x1, y1 = xs[right - 1], at_or_left, xs[right], ys[right]
        at_or_left = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return bool(y < at_or_left - 1e-12)


def roc_report(
    truth: NDArray,
    scores: NDArray,
    radiologists: dict[str, NDArray],
    resamples: int,
    seed: int,
    confidence: float,
    group: str = "Overall",
) -> dict:
    """AUC with its interval, the curve, and each radiologist's point and whether it is under."""
    from scorer.metrics import defined

    value = auc(truth, scores)
    lower, upper, undefined = bootstrap.percentile_interval(
        bootstrap_auc(truth, scores, resamples, seed, group), confidence
    )
    fpr, tpr, thresholds = roc_curve(truth, scores)
    points = {}
    y = truth.astype(bool)
    for name, reads in radiologists.items():
        r = reads.astype(bool)
        point = (
            float((r & ~y).sum() / max((~y).sum(), 1)),
            float((r & y).sum() / max(y.sum(), 1)),
        )
        points[name] = {"fpr": point[0], "tpr": point[1], "under_curve": under_curve(fpr, tpr, point)}
    return {
        "auc": defined(value),
        "auc_lower": defined(lower),
        "auc_upper": defined(upper),
        "auc_undefined_resamples": undefined,
        "roc": {
            "fpr": [defined(v) for v in fpr],
            "tpr": [defined(v) for v in tpr],
            "thresholds": [None if np.isinf(t) else float(t) for t in thresholds],
        },
        "radiologists": points,
        "radiologists_under_curve": sum(p["under_curve"] for p in points.values()),
    }
