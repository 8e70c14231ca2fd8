"""The percentile bootstrap, done on confusion cells instead of on studies.

Resampling n studies with replacement and counting how often each combination of reads
(gold, model, radiologist 1, ...) occurs gives exactly a Multinomial(n, observed cell
frequencies) draw. So 10,000 resamples cost 10,000 draws over at most 2^(raters + 1) cells,
whatever n is, instead of 10,000 passes over the studies. Because every rater's confusion table
comes from the same joint draw, differences between raters stay paired, as they would be when
resampling studies.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from scorer.errors import HostError
from scorer.metrics import METRICS, defined

Counts = NDArray[np.int64]
# The most (resample x cell) counts drawn at once: 2^27 int64s, 1 GiB for the draws (a few times
# that while they are summed). A MURA test with 3 radiologists has 32 cells (64 with a
# stratum), so this allows settings.MAX_RESAMPLES; more raters double the cells each.
MAX_DRAWN_CELLS = 1 << 27
# The most 0/1 columns (gold, model, radiologists, a stratum) to cross: 2^18 cells, whose
# confusion masks take 150 MB; MURA has 5 (6 with a stratum).
MAX_COLUMNS = 18


def group_rng(seed: int, group: str) -> np.random.Generator:
    """A generator for one group (a study type, Overall, a stratum).

    Derived from the seed and the group's name, so each group's resamples stay the same whatever
    other groups a report has.
    """
    return np.random.default_rng([seed, zlib.crc32(group.encode())])


def joint_cells(columns: Sequence[NDArray[np.integer]]) -> Counts:
    """How many studies fall in each combination of 0/1 reads.

    `columns[0]` is the reference (gold); cell index = sum of column j's bit << j.
    """
    if len(columns) > MAX_COLUMNS:
        raise HostError(
            f"{len(columns)} joint reads (gold, the model and {len(columns) - 2} radiologists or "
            f"strata) are more than the bootstrap can cross ({MAX_COLUMNS}); score at most "
            f"{MAX_COLUMNS - 3} radiologists: give a gold file with fewer rater columns"
        )
    stacked = np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1)
    codes = stacked @ (1 << np.arange(stacked.shape[1], dtype=np.int64))
    return np.bincount(codes, minlength=1 << stacked.shape[1]).astype(np.int64)


def confusions(cells: Counts, raters: int) -> Counts:
    """(tp, fp, tn, fn) of each rater column 1..raters against column 0.

    `cells` has shape (..., 2^(raters + 1)); the result has shape (..., raters, 4).
    """
    width = raters + 1
    bits = (np.arange(1 << width)[:, None] >> np.arange(width)) & 1  # (cells, width)
    truth = bits[:, :1].astype(bool)
    reads = bits[:, 1:].astype(bool)
    masks = np.stack([truth & reads, ~truth & reads, ~truth & ~reads, truth & ~reads], axis=-1)
    # (cells, raters, 4) 0/1 masks; one matrix product sums the cells of every table at once.
    return np.tensordot(cells, masks.astype(np.int64), axes=([-1], [0]))


def resample_cells(cells: Counts, resamples: int, seed: int, group: str) -> Counts:
    """`resamples` bootstrap draws of the joint cell counts: shape (resamples, cells).

    Column 1 (the model) is drawn last: first the cells of the other columns (gold and the
    radiologists) from their own multinomial, then how many studies of each such cell the model
    calls abnormal, binomially. Together that is exactly the joint multinomial, and the gold and
    radiologist resamples -- hence the radiologists' intervals -- do not depend on the submission.
    """
    if resamples * cells.size > MAX_DRAWN_CELLS:
        raise HostError(
            f"{resamples:,} bootstrap resamples of {cells.size.bit_length() - 1} joint reads "
            f"(gold, model, radiologists) would need {resamples * cells.size * 8 / 2**30:.1f} GiB "
            f"or more; use at most {MAX_DRAWN_CELLS // cells.size:,} resamples for this gold file"
        )
    n = int(cells.sum())
    by_model = cells.reshape(-1, 2, 2)  # [other reads, model read, gold]
    out = np.zeros((resamples, *by_model.shape), dtype=np.int64)
    if n == 0:
        return out.reshape(resamples, -1)
    coarse = by_model.sum(axis=1).ravel()  # [other reads x gold]
    occupied = np.flatnonzero(coarse)
    drawn = np.zeros((resamples, coarse.size), dtype=np.int64)
    drawn[:, occupied] = group_rng(seed, group).multinomial(n, coarse[occupied] / n, size=resamples)
    share = by_model[:, 1, :].ravel()[occupied] / coarse[occupied]
    ones = np.zeros_like(drawn)
    ones[:, occupied] = group_rng(seed, group + "/model").binomial(drawn[:, occupied], share)
    out[:, :, 1, :] = ones.reshape(resamples, -1, 2)
    out[:, :, 0, :] = (drawn - ones).reshape(resamples, -1, 2)
    return out.reshape(resamples, -1)


def percentile_interval(values: NDArray[np.float64], confidence: float) -> tuple[float, float, int]:
    """(lower, upper, undefined): the percentile interval over the defined resamples.

    Resamples where the statistic is undefined (NaN: e.g. a small study type drawn with only
    normal studies) are left out and counted; with none defined, the interval is (NaN, NaN).
    """
    defined = values[~np.isnan(values)]
    undefined = int(values.size - defined.size)
    if defined.size == 0:
        return float("nan"), float("nan"), undefined
    tail = 100.0 * (1.0 - confidence) / 2.0
    lower, upper = np.percentile(defined, [tail, 100.0 - tail])
    return float(lower), float(upper), undefined


def metric_interval(
    record: dict, metric: str, observed: NDArray, resampled: NDArray, confidence: float, prefix: str = ""
) -> tuple[NDArray[np.float64], int]:
    """Put `metric`, `metric_lower`, `metric_upper` into `record`, from observed (4,) and
    resampled (resamples, 4) confusion counts; return the resampled values and how many of
    them are undefined."""
    fn = METRICS[metric]
    boot = fn(*np.moveaxis(resampled, -1, 0))
    lower, upper, undefined = percentile_interval(boot, confidence)
    record[f"{prefix}{metric}"] = defined(float(fn(*observed)))
    record[f"{prefix}{metric}_lower"] = defined(lower)
    record[f"{prefix}{metric}_upper"] = defined(upper)
    return boot, undefined


def paired_difference(
    a: float | None, b: float | None, resampled: NDArray[np.float64], confidence: float
) -> dict:
    """a - b with the percentile interval of its paired resamples; significant when that
    interval excludes 0."""
    if a is None or b is None:
        return {"difference": None, "lower": None, "upper": None, "significant": None}
    lower, upper, _ = percentile_interval(resampled, confidence)
    significant = None if math.isnan(lower) else bool(lower > 0 or upper < 0)
    return {"difference": a - b, "lower": defined(lower), "upper": defined(upper), "significant": significant}
