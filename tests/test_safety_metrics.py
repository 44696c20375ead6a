"""Metrics edge cases found by mutation testing (docs/mutation.md): each test here killed surviving mutants of
``mia_ray.metrics`` (error lines, 0/1 labels, non-finite scores at large magnitudes, the percentile and the
bootstrap's draw count, TPR at low FPR of an inverted attack)."""

import numpy as np
import pytest

from mia_ray import metrics


@pytest.mark.parametrize("scores, labels, line", [
    ([0.1, 0.2], [True], r"^scores and is_member must have the same shape, got \(2,\) and \(1,\)$"),
    ([[0.1, 0.2]], [[True, False]], r"^scores must be 1-D, got shape \(1, 2\)$"),
    ([0.1, 0.2], [0, 2], r"^is_member must hold booleans or 0/1 values$"),
    ([0.1, 0.2, 0.3], [1, 1, 1], r"^need both members and non-members, got 3 members and 0 non-members$"),
    ([0.1, 0.2], [False, False], r"^need both members and non-members, got 0 members and 2 non-members$"),
])
def test_bad_inputs_are_refused_with_their_line(scores, labels, line):
    with pytest.raises(ValueError, match=line):
        metrics.summarize(scores, labels, n_boot=0)


def test_unknown_stat_and_bad_bootstrap_arguments_name_what_is_allowed():
    s, m = [0.1, 0.2, 0.3, 0.4], [True, False, True, False]
    with pytest.raises(ValueError, match=r"^unknown stat 'f1'; valid: auc, asr, tpr_at_"):
        metrics.bootstrap_ci(s, m, "f1")
    with pytest.raises(ValueError, match=r"^level must be in \(0, 1\), got 0.0$"):
        metrics.bootstrap_ci(s, m, "auc", level=0.0)
    with pytest.raises(ValueError, match=r"^n_boot must be >= 0, got -1$"):
        metrics.summarize(s, m, n_boot=-1)


def test_zero_one_integer_labels_are_the_boolean_ones():
    rng = np.random.default_rng(0)
    s = rng.normal(size=60)
    m = rng.random(60) < 0.4
    np.testing.assert_equal(metrics.summarize(s, m.astype(np.int64), n_boot=20), metrics.summarize(s, m, n_boot=20))
    assert metrics.auc(s, m.astype(np.int8)) == metrics.auc(s, m)


def test_non_finite_scores_rank_strictly_outside_huge_finite_ones():
    """NaN and -inf rank below the lowest finite score, +inf above the highest, even where x - 1 == x (|x| = 1e17):
    members -1e17, +inf; non-members NaN, -inf, 1e17 -> 5 of 6 pairs ordered, AUC 5/6 (not 4/6 or 4.5/6)."""
    s = [-1e17, np.inf, np.nan, -np.inf, 1e17]
    m = [True, True, False, False, False]
    assert metrics.auc(s, m) == pytest.approx(5 / 6, abs=1e-12)


def test_percentile_interval_and_the_number_of_draws(monkeypatch):
    """The interval is the (alpha/2, 1 - alpha/2) quantile pair of exactly n_boot replicates, also when the draws
    are cut into chunks that do not divide n_boot."""
    monkeypatch.setattr(metrics, "_MAX_CELLS", 24)  # 8 distinct scores -> chunks of 3 draws; 7 = 3 + 3 + 1
    values = []

    def mean_member_score(s, m):
        values.append(float(s[m].mean()))
        return values[-1]

    s = np.arange(8, dtype=float)
    m = np.array([True, False] * 4)
    lo, hi = metrics.bootstrap_ci(s, m, mean_member_score, n_boot=7, level=0.8, seed=3)
    assert len(values) == 7
    np.testing.assert_allclose((lo, hi), np.quantile(values, [0.1, 0.9]), rtol=0, atol=1e-12)
    one = metrics.bootstrap_ci(s, m, "auc", n_boot=1)
    assert np.isfinite(one).all() and one[0] == one[1]
    assert np.isnan(metrics.bootstrap_ci(s, m, "auc", n_boot=0)).all()


def test_an_inverted_attack_has_zero_tpr_at_low_fpr_in_every_resample():
    """Every member scores below every non-member: TPR at 1% FPR is 0, and so is each bootstrap replicate (a
    replicate with no threshold below the allowed false positives must count 0 members, not 1)."""
    s = np.concatenate([np.linspace(0, 1, 20), np.linspace(2, 3, 100)])
    m = np.arange(120) < 20
    out = metrics.summarize(s, m, n_boot=50)
    assert out["tpr_at_1pct_fpr"] == 0.0
    assert (out["tpr_at_1pct_fpr_ci_low"], out["tpr_at_1pct_fpr_ci_high"]) == (0.0, 0.0)
