"""Agreement metrics on confusion counts.

Every function takes the four cells of a 2x2 confusion table of a rater (the model or a
radiologist) against the gold standard -- `tp, fp, tn, fn`, as numbers or as equally shaped
arrays (one entry per bootstrap resample) -- and returns floats, with NaN where the metric is
undefined. `undefined_reason` names each undefined case for the report, which shows it as null.
Working on counts, not on per-study arrays, is what makes the bootstrap cheap (see bootstrap.py).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

Floats = NDArray[np.float64]


def confusion_counts(truth: ArrayLike, pred: ArrayLike) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) of 0/1 predictions against 0/1 truth.

    >>> confusion_counts([1, 1, 0, 0], [1, 0, 0, 1])
    (1, 1, 1, 1)
    """
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(pred, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"truth and pred differ in shape: {t.shape} vs {p.shape}")
    return (int(np.sum(t & p)), int(np.sum(~t & p)), int(np.sum(~t & ~p)), int(np.sum(t & ~p)))


def _ratio(num: ArrayLike, den: ArrayLike) -> Floats:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def cohen_kappa(tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike) -> Floats:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e), for a binary table.

    In closed form for two classes: 2 (tp tn - fn fp) / ((tp + fp)(fp + tn) + (tp + fn)(fn + tn)),
    which is exact in integer arithmetic. Undefined (NaN) when p_e = 1: every gold label and
    every prediction in the same single class, or no studies.

    >>> float(cohen_kappa(40, 10, 45, 5))
    0.7
    >>> float(cohen_kappa(10, 0, 0, 0))  # all abnormal, all predicted abnormal
    nan
    """
    tp, fp, tn, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, tn, fn))
    return _ratio(2.0 * (tp * tn - fn * fp), (tp + fp) * (fp + tn) + (tp + fn) * (fn + tn))


def kappa_standard_error(tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike) -> Floats:
    """The large-sample standard error of kappa (Fleiss, Cohen & Everitt 1969).

    This is the estimator statsmodels (`cohens_kappa(...).std_kappa`) and SAS report. The
    official MURA script used `p_o (1 - p_o) / (n (1 - p_e)^2)` -- a variance -- as if it were
    a standard error, so its intervals came out about 30 times too narrow; the square root of
    that expression is Cohen's 1960 approximation, which also ignores the uncertainty of the
    marginals. Undefined (NaN) where kappa is.

    >>> round(float(kappa_standard_error(40, 10, 45, 5)), 4)
    0.0711
    """
    tp, fp, tn, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, tn, fn))
    n = tp + fp + tn + fn
    safe_n = np.where(n > 0, n, 1.0)
    # Rows: gold (0, 1); columns: rater (0, 1); p[i][j] are cell frequencies.
    p00, p01, p10, p11 = tn / safe_n, fp / safe_n, fn / safe_n, tp / safe_n
    row0, row1 = p00 + p01, p10 + p11
    col0, col1 = p00 + p10, p01 + p11
    pe = row0 * col0 + row1 * col1
    kappa = cohen_kappa(tp, fp, tn, fn)
    q = 1.0 - kappa
    term_a = p00 * (1 - (row0 + col0) * q) ** 2 + p11 * (1 - (row1 + col1) * q) ** 2
    term_b = q**2 * (p01 * (col0 + row1) ** 2 + p10 * (col1 + row0) ** 2)
    term_c = (kappa - pe * q) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (term_a + term_b - term_c) / ((1 - pe) ** 2 * safe_n)
    # Rounding can leave a perfect table's variance a hair below zero.
    return np.sqrt(np.clip(variance, 0.0, None))


def accuracy(tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike) -> Floats:
    """(tp + tn) / n; undefined without studies.

    >>> float(accuracy(40, 10, 45, 5))
    0.85
    """
    tp, fp, tn, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, tn, fn))
    return _ratio(tp + tn, tp + fp + tn + fn)


def sensitivity(tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike) -> Floats:
    """tp / (tp + fn), the share of abnormal studies called abnormal; undefined without any.

    >>> float(sensitivity(40, 10, 45, 5))
    0.8888888888888888
    """
    return _ratio(tp, np.asarray(tp, dtype=np.float64) + np.asarray(fn, dtype=np.float64))


def specificity(tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike) -> Floats:
    """tn / (tn + fp), the share of normal studies called normal; undefined without any.

    >>> float(specificity(40, 10, 45, 5))
    0.8181818181818182
    """
    return _ratio(tn, np.asarray(tn, dtype=np.float64) + np.asarray(fp, dtype=np.float64))


def f1_score(tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike) -> Floats:
    """2 tp / (2 tp + fp + fn); undefined when there is no abnormal study and no abnormal call.

    >>> round(float(f1_score(40, 10, 45, 5)), 4)
    0.8421
    """
    tp = np.asarray(tp, dtype=np.float64)
    return _ratio(2.0 * tp, 2.0 * tp + np.asarray(fp, dtype=np.float64) + np.asarray(fn, dtype=np.float64))


# The metrics every report carries, in display order.
METRICS = {
    "kappa": cohen_kappa,
    "accuracy": accuracy,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "f1": f1_score,
}


def undefined_reason(metric: str, tp: int, fp: int, tn: int, fn: int) -> str | None:
    """Why `metric` is undefined for these counts, or None when it is defined."""
    n = tp + fp + tn + fn
    if n == 0:
        return "no studies"
    if metric == "kappa" and (tp + fp) * (fp + tn) + (tp + fn) * (fn + tn) == 0:
        cls = "abnormal" if tp else "normal"
        return f"every gold label and every prediction is {cls} (expected agreement is 1)"
    if metric == "sensitivity" and tp + fn == 0:
        return "no abnormal studies"
    if metric == "specificity" and tn + fp == 0:
        return "no normal studies"
    if metric == "f1" and 2 * tp + fp + fn == 0:
        return "no abnormal studies and no abnormal predictions"
    return None


def defined(value: float | None) -> float | None:
    """A metric as the reports carry it: None (JSON null) where it is undefined (NaN).

    >>> defined(float("nan")) is None
    True
    """
    return None if value is None or math.isnan(value) else float(value)


def normal_quantile(confidence: float) -> float:
    """The two-sided normal quantile: 1.959963984540054 for 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)
