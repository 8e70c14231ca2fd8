"""The multinomial bootstrap on confusion cells against the direct, per-study bootstrap."""

import numpy as np
import pytest
from example_data import make_test, noisy_predictions

from scorer import bootstrap, metrics
from scorer.gold import Panel
from scorer.pipeline import score_group
from scorer.settings import Settings


def _direct_bootstrap(truth, pred, rad, resamples, seed):
    """Resample study indices with replacement: the textbook bootstrap. Also returns the
    difference an unpaired bootstrap would give (model and radiologist on separate resamples)."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    model_k, diff_k, unpaired_k = np.empty(resamples), np.empty(resamples), np.empty(resamples)
    for b in range(resamples):
        idx, other = rng.integers(0, n, n), rng.integers(0, n, n)
        t, p, r = truth[idx], pred[idx], rad[idx]
        km = float(metrics.cohen_kappa(*metrics.confusion_counts(t, p)))
        kr = float(metrics.cohen_kappa(*metrics.confusion_counts(t, r)))
        kr_other = float(metrics.cohen_kappa(*metrics.confusion_counts(truth[other], rad[other])))
        model_k[b], diff_k[b], unpaired_k[b] = km, km - kr, km - kr_other
    return model_k, diff_k, unpaired_k


def test_cells_and_confusions_agree_with_direct_counts():
    rng = np.random.default_rng(0)
    cols = [rng.integers(0, 2, 100) for _ in range(4)]
    cells = bootstrap.joint_cells(cols)
    assert cells.sum() == 100 and cells.size == 16
    conf = bootstrap.confusions(cells, 3)
    for r in range(3):
        assert tuple(conf[r]) == metrics.confusion_counts(cols[0], cols[r + 1])


def test_resampled_cells_keep_n_and_empty_cells():
    cells = np.array([5, 0, 3, 0, 0, 7, 0, 1])
    drawn = bootstrap.resample_cells(cells, 500, seed=1, group="g")
    assert drawn.shape == (500, 8)
    assert (drawn.sum(axis=1) == 16).all()
    assert (drawn[:, cells == 0] == 0).all()


def test_multinomial_bootstrap_agrees_with_index_bootstrap():
    test = make_test(n=207, raters=1, seed=5)
    truth = test.truth
    rad = test.votes[:, 0]
    # A model that mostly agrees with the radiologist (it flips 5% of the radiologist's reads):
    # their kappas rise and fall together over resamples, so pairing narrows the interval of
    # the difference a lot, and an unpaired bootstrap would be caught below.
    pred = np.where(np.random.default_rng(7).random(truth.size) < 0.05, 1 - rad, rad).astype(np.int8)
    resamples = 4000
    fast = score_group(truth, {"model": pred, "rad": rad}, "Overall", Settings(resamples=resamples, seed=1))
    direct_k, direct_d, unpaired_d = _direct_bootstrap(truth, pred, rad, resamples, seed=2)
    model = fast["raters"]["model"]
    # The 2.5th/97.5th percentiles of a 4,000-resample bootstrap vary by about 0.005 here;
    # 0.02 is four of those.
    lo, hi = np.percentile(direct_k, [2.5, 97.5])
    assert model["kappa_lower"] == pytest.approx(lo, abs=0.02)
    assert model["kappa_upper"] == pytest.approx(hi, abs=0.02)
    diff = fast["differences"]["rad"]
    dlo, dhi = np.percentile(direct_d, [2.5, 97.5])
    assert diff["lower"] == pytest.approx(dlo, abs=0.02)
    assert diff["upper"] == pytest.approx(dhi, abs=0.02)
    # Unpaired, the interval is about 0.1 wider (both ends about 0.05 further out): far outside
    # the tolerance above, so a kit that lost the pairing would fail it.
    ulo, uhi = np.percentile(unpaired_d, [2.5, 97.5])
    assert (uhi - ulo) - (dhi - dlo) > 0.06
    assert diff["lower"] - ulo > 0.03 and uhi - diff["upper"] > 0.03


def test_identical_raters_have_a_zero_difference():
    test = make_test(n=120, raters=1, seed=2)
    pred = noisy_predictions(test, 0.8, seed=3)
    out = score_group(test.truth, {"model": pred, "twin": pred.copy()}, "Overall", Settings(resamples=500))
    assert out["differences"]["twin"] == {"difference": 0.0, "lower": 0.0, "upper": 0.0, "significant": False}


def test_radiologists_intervals_do_not_depend_on_the_submission():
    test = make_test(n=150, raters=2, seed=4)
    rads = {"Rad1": test.votes[:, 0], "Rad2": test.votes[:, 1]}
    a = score_group(
        test.truth, {"model": noisy_predictions(test, 0.9, 1), **rads}, "Elbow", Settings(resamples=800)
    )
    b = score_group(
        test.truth, {"model": noisy_predictions(test, 0.6, 2), **rads}, "Elbow", Settings(resamples=800)
    )
    assert a["raters"]["Rad1"] == b["raters"]["Rad1"]
    assert a["raters"]["Rad2"] == b["raters"]["Rad2"]
    assert a["raters"]["model"] != b["raters"]["model"]


def test_percentile_interval_leaves_out_undefined_resamples():
    values = np.array([np.nan, 0.1, 0.2, 0.3, np.nan])
    lower, upper, undefined = bootstrap.percentile_interval(values, 0.5)
    assert undefined == 2 and lower == pytest.approx(0.15) and upper == pytest.approx(0.25)
    assert np.isnan(bootstrap.percentile_interval(np.full(4, np.nan), 0.95)[0])


def test_panel_dataclass_is_plain():
    assert Panel(("a",), (), "label").choice == "label"


def test_a_bootstrap_too_big_for_memory_is_a_host_error_before_allocating():
    from scorer.errors import HostError

    cells = np.ones(1 << 9, dtype=np.int64)  # gold, model and 7 radiologists
    limit = bootstrap.MAX_DRAWN_CELLS // cells.size
    assert bootstrap.resample_cells(cells[:8], 1000, seed=0, group="g").shape == (1000, 8)
    with pytest.raises(HostError, match=f"use at most {limit:,} resamples"):
        bootstrap.resample_cells(cells, limit + 1, seed=0, group="g")


def test_too_many_rater_columns_is_a_host_error_before_crossing_them():
    from scorer.errors import HostError

    columns = [np.zeros(10, dtype=np.int8)] * (bootstrap.MAX_COLUMNS + 1)
    assert bootstrap.joint_cells(columns[:4]).size == 16
    with pytest.raises(HostError, match="fewer rater columns"):
        bootstrap.joint_cells(columns)
