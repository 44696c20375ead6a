"""Tests of mia_ray.calibration: halves, step choice, calibrated thresholds, and the null / separable cases."""

import numpy as np
import pytest
from scipy import stats

from mia_ray import calibration as C
from mia_ray import clopper_pearson as cp
from mia_ray import metrics as M


def _labels(n_pos, n_neg):
    return np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])


# --- halves -----------------------------------------------------------------------------------------


def test_halves_stratified_and_deterministic():
    ids = np.arange(1000, 1257)  # 257 samples: odd class sizes
    m = _labels(128, 129)
    c = C.calibration_halves(ids, m, seed=3)
    assert c.dtype == bool and c.shape == ids.shape
    assert (c & m).sum() == 64 and (c & ~m).sum() == 64  # n // 2 of each class; the odd one is tested
    np.testing.assert_array_equal(c, C.calibration_halves(ids, m, seed=3))
    assert not np.array_equal(c, C.calibration_halves(ids, m, seed=4))


def test_halves_stable_under_row_permutation():
    rng = np.random.default_rng(0)
    ids = rng.choice(10_000, size=300, replace=False)
    m = rng.random(300) < 0.5
    c = C.calibration_halves(ids, m, seed=11)
    perm = rng.permutation(300)
    c_perm = C.calibration_halves(ids[perm], m[perm], seed=11)
    assert set(ids[c].tolist()) == set(ids[perm][c_perm].tolist())


def test_halves_reject_repeated_ids():
    with pytest.raises(ValueError, match="repeated"):
        C.calibration_halves([1, 1, 2, 3], [True, False, True, False], 0)


# --- thresholds: exact hand cases --------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, target, expected",
    [
        (np.arange(1, 11), 0.2, 9.0),  # k = 2: the 2nd largest score; #{>= 9} = 2
        (np.arange(1, 11), 0.1, 10.0),  # k = 1: the largest
        (np.arange(1, 11), 0.25, 9.0),  # k = floor(2.5) = 2
        (np.arange(1, 11), 1.0, 1.0),  # k = n: every calibration non-member is above the threshold
        ([1, 2, 3, 3, 3, 4], 0.5, 4.0),  # k = 3 but #{>= 3} = 4: next distinct value
        ([10, 1, 3, 2], 0.5, 3.0),  # order of the input does not matter
        ([1, 2, np.nan, 5], 0.5, 2.0),  # NaN counts as -inf: sorted -inf, 1, 2, 5
    ],
)
def test_threshold_hand_cases(scores, target, expected):
    assert C.calibrated_threshold(scores, target) == expected


def test_threshold_ties_at_top_go_just_above_max():
    t = C.calibrated_threshold([5, 5, 5, 1], 0.5)  # k = 2 but three scores tie at the top
    assert t > 5 and t == np.nextafter(5.0, np.inf)


def test_threshold_unresolvable_target_is_nan():
    assert np.isnan(C.calibrated_threshold(np.arange(10), 0.05))  # 0.05 < 1/10
    assert np.isnan(C.calibrated_threshold([np.inf, np.inf, 0.0], 0.34))  # cannot exclude +inf scores


def test_threshold_keeps_calibration_fpr_at_or_below_target():
    rng = np.random.default_rng(1)
    for _ in range(50):
        s = np.round(rng.normal(size=int(rng.integers(5, 200))), 1)  # many ties
        for target in (0.1, 0.05, 0.3):
            t = C.calibrated_threshold(s, target)
            if not np.isnan(t):
                assert (s >= t).mean() <= target + 1e-12
                # and t is the smallest observed value doing so
                smaller = np.unique(s)[np.unique(s) < t]
                assert all((s >= v).mean() > target for v in smaller)


# --- step choice --------------------------------------------------------------------------------------


def test_step_ties_go_to_lower_step_and_step_free_attacks_return_none():
    rng = np.random.default_rng(0)
    m = _labels(50, 50)
    s = rng.normal(size=100) + m
    c = C.calibration_halves(np.arange(100), m, 0)
    assert C.choose_step({30: s, 10: s, 20: s - 5.0}, m, c)[0] == 10  # 3 equal AUCs
    assert C.choose_step({10: -s, 20: s}, m, c)[0] == 20
    step, a = C.choose_step({None: s}, m, c)
    assert step is None and a == pytest.approx(M.auc(s[c], m[c]))
    with pytest.raises(ValueError, match="mixed"):
        C.choose_step({None: s, 1: s}, m, c)


def test_exactly_equal_aucs_whose_floats_differ_go_to_the_lower_step():
    # 3 members, 5 non-members on the calibration half: members ranked {0, 2, 7} or {2, 3, 4} of 0..7 both win
    # 6 of 15 pairs (AUC 6/15 exactly), but scikit-learn's trapezoid sum gives 0.39999999999999997 and 0.4
    m = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0], bool)
    c = np.array([1] * 8 + [0, 0], bool)  # the last member and non-member form the test half
    low = np.array([0, 2, 7, 1, 3, 4, 5, 6, 0, 0], float)
    high = np.array([2, 3, 4, 0, 1, 5, 6, 7, 0, 0], float)
    assert M.mann_whitney_twice_u(low[c], m[c]) == M.mann_whitney_twice_u(high[c], m[c]) == 12
    assert M.auc(low[c], m[c]) < M.auc(high[c], m[c])  # the float noise that broke the tie
    step, a = C.choose_step({10: low, 20: high}, m, c)
    assert step == 10 and a == M.auc(low[c], m[c])
    assert C.choose_step({10: high, 20: low}, m, c)[0] == 10


def test_mann_whitney_twice_u_hand_cases():
    m = np.array([1, 1, 0, 0], bool)
    assert M.mann_whitney_twice_u([3.0, 1.0, 2.0, 0.0], m) == 6  # 3 of 4 pairs won
    assert M.mann_whitney_twice_u([1.0, 1.0, 1.0, 0.0], m) == 6  # 2 won, 2 tied
    assert M.mann_whitney_twice_u([np.nan, 5.0, -np.inf, np.inf], m) == 3  # NaN ties -inf; +inf beats 5


def test_step_is_chosen_on_calibration_half_only():
    m = _labels(4, 4)
    c = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    good_on_cal = np.array([9, 9, 0, 0, 0, 0, 9, 9], float)  # perfect on calibration, inverted on test
    good_on_test = np.array([0, 0, 9, 9, 9, 9, 0, 0], float)
    rows = C.calibrated_rows({1: good_on_test, 2: good_on_cal}, m, c, n_boot=0)
    assert rows[0]["chosen_step"] == 2 and rows[0]["calibration_auc"] == 1.0 and rows[0]["test_auc"] == 0.0


def test_halves_need_both_classes():
    m = _labels(3, 3)
    c = np.array([1, 1, 1, 0, 0, 0], bool)  # calibration holds only members
    with pytest.raises(ValueError, match="calibration half"):
        C.calibrated_rows({None: np.arange(6.0)}, m, c)


# --- rows --------------------------------------------------------------------------------------------


def test_rows_hand_case():
    # calibration: members 5,6; non-members 1,2,3,4 -> target 0.25 -> k = 1 -> threshold 4
    # test: members 4.5, 3; non-members 4, 0 -> FP = 1 (4 >= 4), TP = 1 (4.5)
    s = np.array([5, 6, 1, 2, 3, 4, 4.5, 3, 4, 0], float)
    m = np.array([1, 1, 0, 0, 0, 0, 1, 1, 0, 0], bool)
    c = np.array([1] * 6 + [0] * 4, bool)
    (row,) = C.calibrated_rows({None: s}, m, c, fpr_targets={"x": 0.25}, n_boot=0)
    assert set(row) == set(C.CALIBRATED_KEYS)
    assert row["chosen_step"] is None and row["oracle_metric"] == "x"
    assert row["threshold"] == 4.0 and row["calibration_fpr"] == 0.25
    assert (row["test_fp"], row["test_tp"]) == (1, 1)
    assert (row["test_fpr"], row["test_tpr"]) == (0.5, 0.5)
    lo, hi = stats.beta.ppf(0.025, 1, 2), stats.beta.ppf(0.975, 2, 1)
    assert row["test_fpr_ci_low"] == pytest.approx(lo) and row["test_fpr_ci_high"] == pytest.approx(hi)
    assert row["test_auc"] == pytest.approx(M.auc(s[~c], m[~c]))
    assert np.isnan(row["test_auc_ci_low"])  # n_boot = 0
    assert (row["n_cal_members"], row["n_cal_nonmembers"], row["n_test_members"], row["n_test_nonmembers"]) == (
        2,
        4,
        2,
        2,
    )


def test_rows_unresolvable_target_is_nan_with_null_counts():
    rng = np.random.default_rng(0)
    m = _labels(100, 100)
    c = C.calibration_halves(np.arange(200), m, 0)
    rows = {r["oracle_metric"]: r for r in C.calibrated_rows({None: rng.normal(size=200)}, m, c, n_boot=20)}
    assert set(rows) == set(M.FPR_TARGETS)
    r = rows["tpr_at_1pct_fpr"]  # 0.01 < 1/50
    assert np.isnan(r["threshold"]) and np.isnan(r["test_tpr"]) and r["test_fp"] is None
    r = rows["tpr_at_10pct_fpr"]
    assert not np.isnan(r["test_tpr"]) and r["test_auc_ci_low"] <= r["test_auc"] <= r["test_auc_ci_high"]


def test_separable_scores_give_high_calibrated_tpr():
    rng = np.random.default_rng(2)
    m = _labels(1000, 1000)
    s = rng.normal(size=2000) + 5.0 * m
    c = C.calibration_halves(np.arange(2000), m, 0)
    rows = {r["oracle_metric"]: r for r in C.calibrated_rows({None: s}, m, c, n_boot=0)}
    assert rows["tpr_at_1pct_fpr"]["test_tpr"] > 0.9
    assert rows["tpr_at_1pct_fpr"]["test_fpr"] < 0.03
    assert rows["tpr_at_10pct_fpr"]["test_tpr"] > 0.99


# --- null: labels that carry no information ------------------------------------------------------------


def test_null_labels_realized_fpr_matches_target_and_tpr_matches_fpr():
    """2000 + 2000 samples, scores independent of labels, 200 repetitions.

    The CP interval is for the true FPR / TPR of the calibrated rule (conditional on its threshold), so it
    must cover that (= 1 - Phi(t) here, known exactly) in >= 95% of repetitions. The target itself moves
    with the calibration quantile too: with equal halves the interval holds the target in about 83% of
    repetitions (the spread of the realized FPR is sqrt(2) times the test-binomial spread: P(|Z| < 1.96 /
    sqrt 2)); on average the realized FPR is k / (n_cal + 1) <= target and TPR = FPR.
    """
    n, reps = 2000, 200
    m = _labels(n, n)
    ids = np.arange(2 * n)
    cover = {0.1: [], 0.01: []}
    cover_tpr = {0.1: [], 0.01: []}
    target_in = {0.1: [], 0.01: []}
    fpr = {0.1: [], 0.01: []}
    diff = {0.1: [], 0.01: []}
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        s = rng.normal(size=2 * n)
        lab = rng.permutation(m)
        c = C.calibration_halves(ids, lab, seed)
        for r in C.calibrated_rows({None: s}, lab, c, n_boot=0):
            t = r["fpr_target"]
            if t not in cover:
                assert t < 0.01 and (t < 1 / 1000) == np.isnan(r["test_fpr"])
                continue
            true_rate = stats.norm.sf(r["threshold"])
            cover[t].append(r["test_fpr_ci_low"] <= true_rate <= r["test_fpr_ci_high"])
            cover_tpr[t].append(r["test_tpr_ci_low"] <= true_rate <= r["test_tpr_ci_high"])
            target_in[t].append(r["test_fpr_ci_low"] <= t <= r["test_fpr_ci_high"])
            fpr[t].append(r["test_fpr"])
            diff[t].append(r["test_tpr"] - r["test_fpr"])
    for t, tol in ((0.1, 0.004), (0.01, 0.0015)):
        assert np.mean(cover[t]) >= 0.90 and np.mean(cover_tpr[t]) >= 0.90
        assert 0.70 <= np.mean(target_in[t]) <= 0.97
        k = M.allowed_false_positives(t, n // 2)
        assert abs(np.mean(fpr[t]) - k / (n // 2 + 1)) < tol
        assert abs(np.mean(diff[t])) < tol


def test_null_labels_best_step_oracle_is_optimistic_calibrated_is_not():
    """14 steps, 64 + 64 samples at chance: the calibration AUC of the chosen step is biased up, the test
    AUC at that step is not (docs/audit.md)."""
    m = _labels(64, 64)
    cal_auc, test_auc = [], []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        c = C.calibration_halves(np.arange(128), m, seed)
        scores = {step: rng.normal(size=128) for step in range(0, 1400, 100)}
        r = C.calibrated_rows(scores, m, c, fpr_targets={"tpr_at_10pct_fpr": 0.1}, n_boot=0)[0]
        cal_auc.append(r["calibration_auc"])
        test_auc.append(r["test_auc"])
    assert np.mean(cal_auc) > 0.58  # about 0.62: the max of 14 AUCs of sd 0.07
    assert abs(np.mean(test_auc) - 0.5) < 0.025  # sd of the mean about 0.007


def test_intervals_are_clopper_pearson():
    lo, hi = cp.interval(np.array([0, 3, 10]), 10)
    np.testing.assert_allclose(lo, [0.0, stats.beta.ppf(0.025, 3, 8), stats.beta.ppf(0.025, 10, 1)])
    np.testing.assert_allclose(hi, [stats.beta.ppf(0.975, 1, 10), stats.beta.ppf(0.975, 4, 7), 1.0])
