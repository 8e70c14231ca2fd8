"""Kappa and friends against scikit-learn and statsmodels, and published values."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import cohens_kappa

from scorer import metrics

binary = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=300)


def _sklearn_kappa(truth, pred) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(truth, pred))


@given(binary)
@settings(max_examples=300, deadline=None)
def test_kappa_equals_sklearn(pairs):
    truth, pred = zip(*pairs)
    counts = metrics.confusion_counts(truth, pred)
    ours = float(metrics.cohen_kappa(*counts))
    theirs = _sklearn_kappa(truth, pred)
    if np.isnan(theirs):
        assert np.isnan(ours)
        assert metrics.undefined_reason("kappa", *counts) is not None
    else:
        assert ours == pytest.approx(theirs, abs=1e-12)
        assert metrics.undefined_reason("kappa", *counts) is None


@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60), st.integers(0, 60))
@settings(max_examples=300, deadline=None)
def test_standard_error_equals_statsmodels(tp, fp, tn, fn):
    if tp + fp + tn + fn == 0:
        assert np.isnan(metrics.kappa_standard_error(tp, fp, tn, fn))
        return
    table = np.array([[tn, fp], [fn, tp]])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = cohens_kappa(table)
    ours_kappa = float(metrics.cohen_kappa(tp, fp, tn, fn))
    ours_se = float(metrics.kappa_standard_error(tp, fp, tn, fn))
    if np.isnan(expected.kappa):
        assert np.isnan(ours_kappa) and np.isnan(ours_se)
    else:
        assert ours_kappa == pytest.approx(expected.kappa, abs=1e-12)
        assert ours_se == pytest.approx(np.sqrt(max(expected.var_kappa, 0.0)), rel=1e-9, abs=1e-12)


def test_vectorised_over_resamples_matches_scalar():
    rng = np.random.default_rng(3)
    cells = rng.integers(0, 30, size=(50, 4))
    vector = metrics.cohen_kappa(*cells.T)
    scalar = [float(metrics.cohen_kappa(*row)) for row in cells]
    np.testing.assert_allclose(vector, scalar)


def test_published_example():
    # Wikipedia's worked example of Cohen's kappa: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no.
    assert float(metrics.cohen_kappa(tp=20, fp=10, tn=15, fn=5)) == pytest.approx(0.4)


def test_undefined_cases_are_named():
    assert np.isnan(metrics.cohen_kappa(12, 0, 0, 0))
    assert "abnormal" in metrics.undefined_reason("kappa", 12, 0, 0, 0)
    assert "normal" in metrics.undefined_reason("kappa", 0, 0, 9, 0)
    assert metrics.undefined_reason("kappa", 0, 0, 0, 0) == "no studies"
    assert np.isnan(metrics.sensitivity(0, 3, 4, 0))
    assert metrics.undefined_reason("sensitivity", 0, 3, 4, 0) == "no abnormal studies"
    assert np.isnan(metrics.specificity(3, 0, 0, 4))
    # Gold all abnormal, predictions all normal: kappa is defined (and 0), not undefined.
    assert float(metrics.cohen_kappa(0, 0, 0, 7)) == 0.0


def test_official_script_intervals_were_too_narrow():
    # SPEC §4 (b): the official script used the variance as if it were the standard error.
    tp, fp, tn, fn = 80, 15, 95, 17
    n = tp + fp + tn + fn
    p_o = (tp + tn) / n
    p_e = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
    official = p_o * (1 - p_o) / (n * (1 - p_e) ** 2)
    ours = float(metrics.kappa_standard_error(tp, fp, tn, fn))
    assert ours / official > 15  # about 20 times too narrow here; the ratio is 1 / SE
    # The square root of the official expression (Cohen 1960) is close to ours.
    assert np.sqrt(official) == pytest.approx(ours, rel=0.1)


def test_normal_quantile():
    assert metrics.normal_quantile(0.95) == pytest.approx(1.959963984540054)
