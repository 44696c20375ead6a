"""Tests of mia_ray.metrics: agreement with scikit-learn and brute force, hand-computed cases, bootstrap."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from mia_ray import metrics as M


def _data(n_pos, n_neg, shift, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(shift, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)])
    if decimals is not None:
        s = np.round(s, decimals)  # many ties
    return s, np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])


def _brute_roc(s, m):
    """(fpr, tpr) for every threshold "score >= t", t in the distinct scores and +inf."""
    ts = np.append(np.unique(s), np.inf)
    tpr = np.array([(s[m] >= t).mean() for t in ts])
    fpr = np.array([(s[~m] >= t).mean() for t in ts])
    return fpr, tpr


# --- agreement with scikit-learn and brute force ------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 1])
def test_auc_and_roc_match_sklearn(seed, decimals):
    s, m = _data(137, 211, 0.4, seed, decimals)
    assert M.auc(s, m) == pytest.approx(roc_auc_score(m, s), abs=1e-12)
    fpr, tpr, thr = M.roc_curve(s, m)
    e_fpr, e_tpr, e_thr = sk_roc_curve(m, s, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, e_fpr)
    np.testing.assert_array_equal(tpr, e_tpr)
    np.testing.assert_array_equal(thr, e_thr)
    # drop_intermediate=False: one point per distinct score, plus the (0, 0) start
    assert len(fpr) == len(np.unique(s)) + 1


@pytest.mark.parametrize("decimals", [None, 1])
def test_asr_and_tpr_match_brute_force(decimals):
    s, m = _data(300, 400, 0.5, 3, decimals)
    fpr, tpr = _brute_roc(s, m)
    assert M.asr(s, m) == pytest.approx(np.max((tpr + 1 - fpr) / 2), abs=1e-12)
    for target in (0.0025, 0.01, 0.05, 0.1, 0.3, 1.0):
        assert M.tpr_at_fpr(s, m, target) == pytest.approx(tpr[fpr <= target + 1e-12].max(), abs=1e-12)


# --- hand-computed cases ------------------------------------------------------------------------------


def test_asr_hand_computed():
    # members 4, 3, 1; non-members 2, 0. Best threshold ">= 3": TPR 2/3, FPR 0 -> (2/3 + 1) / 2.
    s = np.array([4.0, 3.0, 1.0, 2.0, 0.0])
    m = np.array([1, 1, 1, 0, 0])
    assert M.asr(s, m) == pytest.approx(5 / 6)


def test_asr_ties_form_one_point():
    # members 1, 1; non-members 1, 0. The tie at 1 cannot be split: TPR 1 at FPR 0.5 -> 0.75, not 1.
    s = np.array([1.0, 1.0, 1.0, 0.0])
    m = np.array([True, True, False, False])
    assert M.asr(s, m) == pytest.approx(0.75)


def test_tpr_at_fpr_hand_computed():
    non = np.arange(10.0)  # 10 non-members: resolution 0.1
    mem = np.array([10.0, 8.5, 7.5, 3.0])
    s, m = np.concatenate([mem, non]), np.r_[np.ones(4, bool), np.zeros(10, bool)]
    assert M.tpr_at_fpr(s, m, 0.1) == pytest.approx(0.5)  # one FP allowed: threshold above 8
    assert M.tpr_at_fpr(s, m, 0.15) == pytest.approx(0.5)  # still one FP
    assert M.tpr_at_fpr(s, m, 0.2) == pytest.approx(0.75)  # threshold above 7
    assert M.tpr_at_fpr(s, m, 1.0) == 1.0
    assert math.isnan(M.tpr_at_fpr(s, m, 0.05))  # below 1/10
    assert math.isnan(M.tpr_at_fpr(s, m, 0.0))


def test_tpr_at_fpr_target_is_not_lost_to_rounding():
    # 0.29 * 100 == 28.999999999999996 in floating point; 29 false positives must still be allowed
    non = np.arange(100.0)
    s, m = np.r_[70.5, non], np.r_[True, np.zeros(100, bool)]
    assert M.tpr_at_fpr(s, m, 0.29) == 1.0  # ">= 70.5" has FP 29 (71..99)
    assert M.tpr_at_fpr(s, m, 0.28) == 0.0


def test_tpr_at_fpr_ties_are_not_split():
    # two non-members and two members tie at 9: ">= 9" has FP 2, so at 10% FPR only the 10 counts.
    non = np.array([9.0, 9.0, 0, 1, 2, 3, 4, 5, 6, 7])
    mem = np.array([10.0, 9.0, 9.0, 1.0])
    s, m = np.concatenate([mem, non]), np.r_[np.ones(4, bool), np.zeros(10, bool)]
    assert M.tpr_at_fpr(s, m, 0.1) == pytest.approx(0.25)
    assert M.tpr_at_fpr(s, m, 0.2) == pytest.approx(0.75)


def test_tpr_nan_below_resolution():
    s, m = _data(50, 50, 1.0, 4)
    assert math.isnan(M.tpr_at_fpr(s, m, 0.01))  # 1% of 50 = 0.5 non-members: not resolvable
    assert math.isnan(M.tpr_at_fpr(s, m, 0.019))
    assert not math.isnan(M.tpr_at_fpr(s, m, 0.02))  # exactly 1/50
    assert 0.0 <= M.tpr_at_fpr(s, m, 0.1) <= 1.0
    s, m = _data(100, 100, 1.0, 4)
    assert not math.isnan(M.tpr_at_fpr(s, m, 0.01))  # exactly 1/100 is resolvable


def test_perfect_and_reversed_separation():
    s = np.concatenate([np.arange(100.0, 200.0), np.arange(100.0)])
    m = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    assert M.auc(s, m) == 1.0
    assert M.asr(s, m) == 1.0
    assert M.tpr_at_fpr(s, m, 0.01) == 1.0
    assert M.tpr_at_fpr(s, m, 0.1) == 1.0
    assert M.auc(-s, m) == 0.0
    assert M.asr(-s, m) == 0.5  # the trivial threshold
    assert M.tpr_at_fpr(-s, m, 0.1) == 0.0


# --- non-finite scores and input errors ---------------------------------------------------------------


def test_non_finite_scores_are_ranked():
    m = np.array([True, True, False, False])
    # NaN member ranks below every finite score: it beats nothing; 5 beats both -> 2/4
    assert M.auc(np.array([np.nan, 5.0, 1.0, 2.0]), m) == 0.5
    # +inf member beats everything; 0 beats nothing -> 2/4
    assert M.auc(np.array([np.inf, 0.0, 1.0, 2.0]), m) == 0.5
    # -inf non-member is beaten by both members; 3 is beaten by 4 only -> 3/4
    assert M.auc(np.array([0.0, 4.0, -np.inf, 3.0]), m) == 0.75
    # NaN and -inf tie; all non-finite is fine
    assert M.auc(np.array([np.nan, np.nan, -np.inf, -np.inf]), m) == 0.5
    assert M.auc(np.array([np.inf, np.inf, np.nan, -np.inf]), m) == 1.0
    # huge finite scores: the replacement still lands strictly below / above them
    assert M.auc(np.array([1e300, 1e300, np.nan, -1e300]), m) == 1.0
    assert M.auc(np.array([np.inf, np.inf, 1e300, 1e300]), m) == 1.0


def test_non_finite_scores_everywhere_in_the_api():
    s, m = _data(200, 200, 1.0, 5)
    s[:20] = np.nan  # 20 failed members count as least member-like
    orig = s.copy()
    ref = s.copy()
    ref[:20] = s[20:].min() - 1
    out = M.summarize(s, m, n_boot=50)
    assert all(not math.isnan(v) for k, v in out.items() if "0_1pct" not in k and "0_01pct" not in k)
    assert out["auc"] == pytest.approx(roc_auc_score(m, ref))
    assert M.asr(s, m) == M.asr(ref, m)
    assert M.tpr_at_fpr(s, m, 0.1) == M.tpr_at_fpr(ref, m, 0.1)
    assert M.bootstrap_ci(s, m, "auc", n_boot=50) == M.bootstrap_ci(ref, m, "auc", n_boot=50)
    np.testing.assert_array_equal(s, orig)  # input not modified


@pytest.mark.parametrize(
    "scores, labels",
    [
        ([1.0, 2.0, 3.0], [1, 1, 1]),  # no non-members
        ([1.0, 2.0], [False, False]),  # no members
        ([], []),
        ([1.0, 2.0, 3.0], [1, 0]),  # shapes differ
        ([[1.0, 2.0]], [[1, 0]]),  # not 1-D
        ([1.0, 2.0], [2, 0]),  # not a label
    ],
)
def test_bad_input_raises(scores, labels):
    for call in (
        lambda: M.auc(scores, labels),
        lambda: M.asr(scores, labels),
        lambda: M.roc_curve(scores, labels),
        lambda: M.tpr_at_fpr(scores, labels, 0.1),
        lambda: M.bootstrap_ci(scores, labels, "auc"),
        lambda: M.summarize(scores, labels),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value)


def test_bad_parameters_raise():
    s, m = _data(20, 20, 1.0)
    with pytest.raises(ValueError, match="target_fpr"):
        M.tpr_at_fpr(s, m, 1.5)
    with pytest.raises(ValueError, match="auc"):  # lists the valid names
        M.bootstrap_ci(s, m, "nope")
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_ci(s, m, "auc", n_boot=-1)
    with pytest.raises(ValueError, match="level"):
        M.bootstrap_ci(s, m, "auc", level=1.0)


# --- bootstrap ----------------------------------------------------------------------------------------


def test_bootstrap_ci_null_covers_half_and_separated_does_not():
    rng = np.random.default_rng(7)
    s = rng.normal(size=1000)  # independent of the labels
    m = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    lo, hi = M.bootstrap_ci(s, m, "auc", n_boot=500)
    assert lo < 0.5 < hi
    assert hi - lo < 0.1  # and it is not absurdly wide (SE of AUC here is ~0.018)
    s, m = _data(500, 500, 1.0, 8)
    lo, hi = M.bootstrap_ci(s, m, "auc", n_boot=500)
    assert 0.5 < lo < M.auc(s, m) < hi


def test_bootstrap_ci_width_matches_hanley_mcneil():
    s, m = _data(1000, 1000, 0.5, 9)
    a = M.auc(s, m)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + 999 * (q1 - a * a) + 999 * (q2 - a * a)) / 1e6)
    lo, hi = M.bootstrap_ci(s, m, "auc", n_boot=1000)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_deterministic_per_seed():
    s, m = _data(300, 300, 0.3, 10)
    for stat in ("auc", "asr", "tpr_at_10pct_fpr"):
        assert M.bootstrap_ci(s, m, stat, seed=3) == M.bootstrap_ci(s, m, stat, seed=3)
        assert M.bootstrap_ci(s, m, stat, seed=3) != M.bootstrap_ci(s, m, stat, seed=4)


@pytest.mark.parametrize("decimals", [None, 1])
def test_vectorised_stats_match_per_resample_functions(decimals):
    # the named fast path and a callable see the same resamples, so they must agree exactly
    s, m = _data(120, 150, 0.5, 11, decimals)
    pairs = [
        ("auc", M.auc),
        ("asr", M.asr),
        ("tpr_at_10pct_fpr", lambda a, b: M.tpr_at_fpr(a, b, 0.1)),
        ("tpr_at_1pct_fpr", lambda a, b: M.tpr_at_fpr(a, b, 0.01)),
    ]
    for name, fn in pairs:
        fast = M.bootstrap_ci(s, m, name, n_boot=40, level=0.8, seed=5)
        slow = M.bootstrap_ci(s, m, fn, n_boot=40, level=0.8, seed=5)
        np.testing.assert_allclose(fast, slow, atol=1e-12, err_msg=name)


def test_bootstrap_n_boot_zero_and_unresolvable():
    s, m = _data(50, 50, 1.0)
    assert all(math.isnan(v) for v in M.bootstrap_ci(s, m, "auc", n_boot=0))
    assert all(math.isnan(v) for v in M.bootstrap_ci(s, m, "tpr_at_1pct_fpr"))  # 1% of 50: NaN


def test_bootstrap_is_vectorised(monkeypatch):
    """200 resamples of 2000 scores take one vectorised batch (not one call per resample); a timed
    assertion would be flaky on a shared machine, so the work is counted instead."""
    calls = []
    batch = M._batch_stats
    monkeypatch.setattr(M, "_batch_stats", lambda *a: calls.append(a[0].shape[0]) or batch(*a))
    s, m = _data(1000, 1000, 0.3, 12)
    M.bootstrap_ci(s, m, "auc", n_boot=200)
    M.summarize(s, m, n_boot=200)
    assert calls == [200, 200]


# --- summarize ----------------------------------------------------------------------------------------


def test_summarize_keys_types_and_values():
    s, m = _data(1000, 1200, 0.6, 13, decimals=2)
    out = M.summarize(s, m, n_boot=100, seed=2)
    assert list(out) == [
        "n_members", "n_nonmembers", "auc", "auc_ci_low", "auc_ci_high", "asr", "tpr_at_10pct_fpr",
        "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci_low", "tpr_at_1pct_fpr_ci_high", "tpr_at_0_1pct_fpr",
        "tpr_at_0_01pct_fpr",
    ]  # fmt: skip
    assert out["n_members"] == 1000 and out["n_nonmembers"] == 1200
    assert type(out["n_members"]) is int and type(out["n_nonmembers"]) is int
    assert all(type(v) is float for k, v in out.items() if not k.startswith("n_"))
    assert out["auc"] == M.auc(s, m)
    assert out["asr"] == M.asr(s, m)
    for key, target in M.FPR_TARGETS.items():
        np.testing.assert_equal(out[key], M.tpr_at_fpr(s, m, target))  # NaN == NaN here
    assert math.isnan(out["tpr_at_0_01pct_fpr"])  # 1200 non-members cannot resolve 1e-4
    assert not math.isnan(out["tpr_at_0_1pct_fpr"])
    assert (out["auc_ci_low"], out["auc_ci_high"]) == M.bootstrap_ci(s, m, "auc", n_boot=100, seed=2)
    ci = M.bootstrap_ci(s, m, "tpr_at_1pct_fpr", n_boot=100, seed=2)
    assert (out["tpr_at_1pct_fpr_ci_low"], out["tpr_at_1pct_fpr_ci_high"]) == ci
    assert out["auc_ci_low"] < out["auc"] < out["auc_ci_high"]
    assert out["tpr_at_1pct_fpr_ci_low"] <= out["tpr_at_1pct_fpr"] <= out["tpr_at_1pct_fpr_ci_high"]


def test_summarize_nan_cis():
    s, m = _data(50, 50, 1.0)
    out = M.summarize(s, m)
    assert math.isnan(out["tpr_at_1pct_fpr"])
    assert math.isnan(out["tpr_at_1pct_fpr_ci_low"]) and math.isnan(out["tpr_at_1pct_fpr_ci_high"])
    assert not math.isnan(out["auc_ci_low"])
    out = M.summarize(*_data(300, 300, 1.0), n_boot=0)
    assert not math.isnan(out["tpr_at_1pct_fpr"])
    assert all(math.isnan(out[k]) for k in out if "_ci_" in k)


@pytest.mark.parametrize("key", list(M.FPR_TARGETS))
def test_tpr_columns_mean_what_their_names_say(key):
    """``tpr_at_<x>pct_fpr`` (``_`` as the decimal point) is the TPR at FPR x% on the ROC, recomputed
    by brute force from the name alone, with enough non-members to resolve 0.01%."""
    fpr_named = float(key.removeprefix("tpr_at_").removesuffix("pct_fpr").replace("_", ".")) / 100
    s, m = _data(3000, 20000, 1.5, 14)
    ts = np.append(np.unique(s), np.inf)  # _brute_roc, by sorting (23k thresholds)
    pos, neg = np.sort(s[m]), np.sort(s[~m])
    tpr = 1 - np.searchsorted(pos, ts, "left") / pos.size
    fpr = 1 - np.searchsorted(neg, ts, "left") / neg.size
    expected = tpr[fpr <= fpr_named + 1e-12].max()
    assert M.summarize(s, m, n_boot=0)[key] == pytest.approx(expected, abs=1e-12)
    assert M.tpr_at_fpr(s, m, fpr_named) == pytest.approx(expected, abs=1e-12)
