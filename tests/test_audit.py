"""Tests of mia_ray.audit and mia_ray.clopper_pearson against independent scipy computations and known cases."""

import math

import numpy as np
import pytest
from scipy import stats

from mia_ray import audit as A
from mia_ray import calibration as C
from mia_ray import clopper_pearson as cp
from mia_ray.errors import ConfigError

DELTA = 1e-5


def _labels(n_pos, n_neg):
    return np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])


# --- Clopper-Pearson ----------------------------------------------------------------------------------


def test_cp_bounds_are_beta_quantiles():
    n, a = 37, 0.05
    k = np.arange(n + 1)
    up, lo = cp.upper(k, n, a), cp.lower(k, n, a)
    for kk in range(n + 1):
        exp_up = 1.0 if kk == n else stats.beta.ppf(1 - a, kk + 1, n - kk)
        exp_lo = 0.0 if kk == 0 else stats.beta.ppf(a, kk, n - kk + 1)
        assert up[kk] == pytest.approx(exp_up, rel=1e-12) and lo[kk] == pytest.approx(exp_lo, rel=1e-12)
    assert isinstance(cp.upper(3, n, a), float)
    # symmetry: the lower bound of k is one minus the upper bound of n - k
    np.testing.assert_allclose(lo, 1.0 - cp.upper(n - k, n, a), atol=1e-12)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.37, 0.5, 0.9])
def test_cp_upper_bound_coverage_exact(p):
    """P[p > upper(K)] <= alpha for K ~ Bin(n, p), summed exactly over K."""
    n, a = 50, 0.05
    k = np.arange(n + 1)
    miss = stats.binom.pmf(k, n, p)[cp.upper(k, n, a) < p].sum()
    assert miss <= a


def test_cp_rejects_bad_input():
    with pytest.raises(ValueError):
        cp.upper(5, 4, 0.05)
    with pytest.raises(ValueError):
        cp.lower(1, 0, 0.05)
    with pytest.raises(ValueError):
        cp.interval(1, 4, 1.5)


# --- epsilon lower bound, Clopper-Pearson -------------------------------------------------------------


def _independent_cp_eps(tp, fn, fp, tn, delta, alpha):
    n_pos, n_neg = tp + fn, fp + tn
    a = alpha / 2
    tpr_lo = stats.beta.ppf(a, tp, n_pos - tp + 1) if tp > 0 else 0.0
    tnr_lo = stats.beta.ppf(a, tn, n_neg - tn + 1) if tn > 0 else 0.0
    fpr_hi = stats.beta.ppf(1 - a, fp + 1, n_neg - fp) if fp < n_neg else 1.0
    fnr_hi = stats.beta.ppf(1 - a, fn + 1, n_pos - fn) if fn < n_pos else 1.0
    best = 0.0
    if tpr_lo > delta:
        best = max(best, math.log((tpr_lo - delta) / fpr_hi))
    if tnr_lo > delta:
        best = max(best, math.log((tnr_lo - delta) / fnr_hi))
    return best


@pytest.mark.parametrize(
    "counts", [(50, 14, 3, 61), (64, 0, 0, 64), (30, 34, 2, 62), (60, 4, 30, 34), (10, 10, 10, 10), (0, 5, 5, 0)]
)
@pytest.mark.parametrize("delta", [0.0, 1e-5, 0.1])
def test_cp_epsilon_matches_independent_beta_computation(counts, delta):
    got = A.epsilon_lower_bound_cp(*counts, delta=delta, alpha=0.05)
    assert got == pytest.approx(_independent_cp_eps(*counts, delta, 0.05), rel=1e-10, abs=1e-12)


def test_cp_epsilon_relabelling_symmetry():
    # members <-> non-members with the rule reversed swaps the two directions; the bound is the same
    swapped = A.epsilon_lower_bound_cp(34, 30, 4, 60, DELTA)
    assert A.epsilon_lower_bound_cp(60, 4, 30, 34, DELTA) == pytest.approx(swapped)


def test_cp_perfect_attack_finite_and_growing_with_n():
    prev = 0.0
    for n in (16, 64, 256, 1024, 4096):
        eps = A.epsilon_lower_bound_cp(n, 0, 0, n, DELTA)
        x = 0.025 ** (1 / n)  # TPR_lo = (alpha/2)^(1/n), FPR_hi = 1 - that
        assert eps == pytest.approx(math.log((x - DELTA) / (1 - x)), rel=1e-9)
        assert prev < eps < math.inf
        prev = eps


def test_cp_random_guessing_gives_zero_with_high_probability():
    n, hits = 500, 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        tp, fp = rng.binomial(n, 0.3), rng.binomial(n, 0.3)  # one fixed rule, labels carry no information
        hits += A.epsilon_lower_bound_cp(tp, n - tp, fp, n - fp, DELTA) > 0
    assert hits / 300 <= 0.05


# --- GDP ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [0.05, 0.3, 1.0, 2.5, 6.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_gdp_epsilon_solves_the_equation(mu, delta):
    eps = A.epsilon_from_gdp(mu, delta)
    phi = stats.norm.cdf
    lhs = phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)
    if eps == 0.0:
        assert phi(mu / 2) - phi(-mu / 2) <= delta  # already delta-close at eps = 0
    else:
        assert lhs == pytest.approx(delta, rel=1e-6)
        # and it is the right root: a bit less epsilon gives more delta
        assert phi(-(eps * 0.99) / mu + mu / 2) - math.exp(eps * 0.99) * phi(-(eps * 0.99) / mu - mu / 2) > delta


def test_gdp_epsilon_monotone_and_zero_for_nonpositive_mu():
    assert A.epsilon_from_gdp(0.0, DELTA) == 0.0 and A.epsilon_from_gdp(-1.0, DELTA) == 0.0
    eps = [A.epsilon_from_gdp(mu, DELTA) for mu in (0.5, 1.0, 2.0, 4.0)]
    assert np.all(np.diff(eps) > 0)
    assert A.epsilon_from_gdp(1.0, 1e-3) < A.epsilon_from_gdp(1.0, 1e-6)


def test_gdp_mu_matches_independent_computation():
    tp, fn, fp, tn = 50, 14, 3, 61
    fpr_hi = stats.beta.ppf(0.975, fp + 1, 64 - fp)
    fnr_hi = stats.beta.ppf(0.975, fn + 1, 64 - fn)
    mu = stats.norm.ppf(1 - fpr_hi) - stats.norm.ppf(fnr_hi)
    assert A.gdp_mu_lower_bound(tp, fn, fp, tn) == pytest.approx(mu, rel=1e-10)
    assert A.epsilon_lower_bound_gdp(tp, fn, fp, tn, DELTA) == pytest.approx(A.epsilon_from_gdp(mu, DELTA))
    assert A.epsilon_lower_bound_gdp(20, 44, 20, 44, DELTA) == 0.0  # chance: mu_LB < 0


# --- thresholds chosen on calibration / Bonferroni ----------------------------------------------------


def test_audit_rows_count_on_test_half_only():
    rng = np.random.default_rng(0)
    m = _labels(500, 500)
    s = rng.normal(size=1000) + 2.0 * m
    c = C.calibration_halves(np.arange(1000), m, 0)
    rows = A.audit_rows(s, m, c, DELTA)
    assert [r["method"] for r in rows] == ["clopper_pearson", "gdp"]
    for r in rows:
        assert set(r) == set(A.AUDIT_KEYS) and r["threshold_selection"] == "calibration"
        assert (r["tp"] + r["fn"], r["fp"] + r["tn"]) == (250, 250)
        assert (r["tp"], r["fn"], r["fp"], r["tn"]) == A.confusion(s[~c], m[~c], r["threshold"])
        assert r["threshold"] in set(s[c].tolist())  # chosen among calibration scores
        assert r["epsilon_lb"] > 0.5
    cpr, gdp = rows

    def counts(r):
        return [r[k] for k in ("tp", "fn", "fp", "tn")]

    assert cpr["epsilon_lb"] == pytest.approx(A.epsilon_lower_bound_cp(*counts(cpr), DELTA))
    assert gdp["epsilon_lb"] == pytest.approx(A.epsilon_lower_bound_gdp(*counts(gdp), DELTA))
    assert cpr["direction"] in ("tpr/fpr", "tnr/fnr") and math.isnan(cpr["mu_low"]) and gdp["mu_low"] > 0


def test_direction_with_no_member_above_threshold_is_tnr_fnr():
    # calibration: members {10, 11}, non-members {0, 1}: every CP bound is 0 on 2 + 2 samples, so the largest
    # mu_LB picks threshold 10. Test half: members {5, 6}, non-members {0, 1}: tp = 0, fn = 2, fp = 0, tn = 2.
    # FNR_hi = 1, so TPR_lo - delta < 0 (log-ratio -inf); TNR/FNR has ln(1 - FPR_hi - delta), FPR_hi =
    # 1 - 0.025^(1/2): finite and negative, the larger one (README: `direction` names the larger log-ratio).
    m = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    c = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    s = np.array([10, 11, 0, 1, 5, 6, 0, 1], float)
    cpr, gdp = A.audit_rows(s, m, c, DELTA)
    assert cpr["threshold"] == 10 and (cpr["tp"], cpr["fn"], cpr["fp"], cpr["tn"]) == (0, 2, 0, 2)
    assert cpr["fnr_high"] == 1.0 and cpr["fpr_high"] == pytest.approx(1 - 0.025**0.5, rel=1e-12)
    assert cpr["direction"] == "tnr/fnr" and cpr["epsilon_lb"] == 0.0
    # the mirror case: test members {20, 21}, non-members {12, 13}: fp = N, so FPR_hi = 1 and TNR/FNR proves
    # nothing; TPR/FPR is ln(1 - FNR_hi - delta), finite
    s2 = np.array([10, 11, 0, 1, 20, 21, 12, 13], float)
    sw = A.audit_rows(s2, m, c, DELTA)[0]
    assert (sw["tp"], sw["fn"], sw["fp"], sw["tn"]) == (2, 0, 2, 0)
    assert sw["fpr_high"] == 1.0 and sw["direction"] == "tpr/fpr" and sw["epsilon_lb"] == 0.0


def test_bonferroni_pays_alpha_over_n():
    rng = np.random.default_rng(1)
    m = _labels(100, 100)
    s = rng.normal(size=200) + 3.0 * m
    rows = A.audit_rows_bonferroni(s, m, DELTA, alpha=0.05)
    for r in rows:
        assert r["n_hypotheses"] == 200 and r["threshold_selection"] == "bonferroni"
        a = 0.05 / (2 * 200)
        assert r["fpr_high"] == pytest.approx(cp.upper(r["fp"], 100, a))
        assert r["fnr_high"] == pytest.approx(cp.upper(r["fn"], 100, a))
    # the searched threshold is the best one at that level
    t, tp, fn, fp, tn = A._all_thresholds(A._scores(s), m)
    best = max(_independent_cp_eps(*x, DELTA, 0.05 / 200) for x in zip(tp, fn, fp, tn, strict=True))
    assert rows[0]["epsilon_lb"] == pytest.approx(best)
    assert rows[0]["epsilon_lb"] > 0.5


@pytest.mark.parametrize("route", ["calibration", "bonferroni"])
def test_null_labels_bounds_are_zero_in_most_runs(route):
    m = _labels(200, 200)
    pos = {"clopper_pearson": 0, "gdp": 0}
    for seed in range(100):
        rng = np.random.default_rng(seed)
        s = rng.normal(size=400)
        lab = rng.permutation(m)
        if route == "calibration":
            rows = A.audit_rows(s, lab, C.calibration_halves(np.arange(400), lab, seed), DELTA)
        else:
            rows = A.audit_rows_bonferroni(s, lab, DELTA)
        for r in rows:
            pos[r["method"]] += r["epsilon_lb"] > 0
    assert pos["clopper_pearson"] <= 8 and pos["gdp"] <= 8  # each at most alpha = 5% in expectation


def test_confusion_hand_case_and_nan_scores():
    s = [3.0, np.nan, 1.0, 2.0]
    m = [True, True, False, False]
    assert A.confusion(s, m, 2.0) == (1, 1, 1, 1)  # NaN member counts as -inf: a false negative
    assert A.confusion(s, m, -np.inf) == (2, 0, 2, 0)


# --- one-run audit ------------------------------------------------------------------------------------


def _steinke_p_value(m, r, v, eps, delta):
    """The p-value written out term by term (Steinke, Nasr & Jagielski 2023, Thm 5.2)."""
    q = math.exp(eps) / (1 + math.exp(eps))

    def f(u):  # P[Bin(r, q) >= u]
        return 1.0 if u <= 0 else float(sum(stats.binom.pmf(j, r, q) for j in range(u, r + 1)))

    extra = max([(f(v - i) - f(v)) / i for i in range(1, v + 1)], default=0.0)
    return min(1.0, f(v) + 2 * m * delta * extra)


@pytest.mark.parametrize(
    "m, r, v, eps, delta",
    [(1000, 100, 100, 3.0, 0.0), (1000, 100, 80, 1.0, 1e-5), (200, 50, 45, 2.0, 1e-3), (10, 5, 0, 1.0, 1e-2)],
)
def test_one_run_p_value_matches_written_out_formula(m, r, v, eps, delta):
    assert A.one_run_p_value(m, r, v, eps, delta) == pytest.approx(_steinke_p_value(m, r, v, eps, delta), rel=1e-9)


def test_one_run_perfect_attack_closed_form_and_monotone():
    # delta = 0, all r guesses right: p(eps) = q^r, so eps_LB = logit(alpha^(1/r)); m = 1000, r = 100 -> 3.49
    q = 0.05 ** (1 / 100)
    assert A.epsilon_one_run(1000, 100, 100, 0.05, 0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-8)
    assert A.epsilon_one_run(1000, 100, 100, 0.05, 0.0) == pytest.approx(3.493, abs=1e-3)
    with_delta = A.epsilon_one_run(1000, 100, 100, 0.05, 1e-5)
    assert 0 < with_delta < A.epsilon_one_run(1000, 100, 100, 0.05, 0.0)  # the delta term only costs
    assert A.one_run_p_value(1000, 100, 100, with_delta, 1e-5) == pytest.approx(0.05, rel=1e-6)
    by_r = [A.epsilon_one_run(1000, r, r, 0.05, 1e-5) for r in (10, 50, 100, 500, 1000)]
    assert np.all(np.diff(by_r) > 0)
    by_v = [A.epsilon_one_run(1000, 100, v, 0.05, 1e-5) for v in (60, 70, 80, 90, 100)]
    assert np.all(np.diff(by_v) > 0)
    assert A.epsilon_one_run(1000, 100, 50, 0.05, 1e-5) == 0.0  # half right: no evidence
    assert A.epsilon_one_run(1000, 0, 0) == 0.0


def test_one_run_guesses_hand_case():
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    inc = np.array([True, False, False, False, True])
    assert A.one_run_guesses(s, inc, k_plus=2) == (2, 1)  # in: 0.9 (right), 0.8 (wrong)
    assert A.one_run_guesses(s, inc, k_plus=1, k_minus=2) == (3, 3)  # out: 0.1, 0.2 (both right)
    with pytest.raises(ValueError):
        A.one_run_guesses(s, inc, k_plus=4, k_minus=2)


@pytest.mark.parametrize("k_plus, k_minus", [(100, 0), (50, 50)])
def test_one_run_randomized_response_at_eps_1_stays_below_1(k_plus, k_minus):
    """Each canary's score is epsilon-DP randomised response (eps = 1) on its inclusion bit: the bound must
    exceed 1 in at most about alpha = 5% of runs, and be positive on average (the attack has signal)."""
    m, eps_true = 1000, 1.0
    keep = math.exp(eps_true) / (1 + math.exp(eps_true))
    bounds = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        _, inc = A.canary_inclusion(np.arange(5000), m, seed)
        truthful = rng.random(m) < keep
        scores = np.where(truthful, inc, ~inc).astype(float)
        bounds.append(A.canary_audit_row(scores, inc, k_plus, k_minus, 0.05, DELTA)["epsilon_lb"])
    bounds = np.array(bounds)
    assert (bounds > eps_true).mean() <= 0.08
    assert bounds.mean() > 0.2


def test_canary_audit_row_keys():
    inc = np.array([True, False] * 50)
    row = A.canary_audit_row(inc.astype(float), inc, 20, 20, 0.05, DELTA)
    assert set(row) == set(A.ONE_RUN_KEYS)
    assert (row["m"], row["n_guesses"], row["n_correct"]) == (100, 40, 40) and row["epsilon_lb"] > 1


# --- canary selection ---------------------------------------------------------------------------------


def test_canary_inclusion_deterministic_order_free_and_balanced():
    pool = np.arange(20_000)
    ids, inc = A.canary_inclusion(pool, 10_000, seed=5)
    assert ids.size == 10_000 and np.unique(ids).size == 10_000 and np.isin(ids, pool).all()
    assert np.all(np.diff(ids) > 0) and inc.dtype == bool
    assert 0.48 < inc.mean() < 0.52
    ids2, inc2 = A.canary_inclusion(np.random.default_rng(0).permutation(pool), 10_000, seed=5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(inc, inc2)
    ids3, _ = A.canary_inclusion(pool, 10_000, seed=6)
    assert not np.array_equal(ids, ids3)


def test_canary_candidates_exclude_the_split_and_bad_m_is_a_config_error():
    cand = A.canary_candidates(10, [0, 1, 2], np.array([7, 8]))
    np.testing.assert_array_equal(cand, [3, 4, 5, 6, 9])
    with pytest.raises(ConfigError, match="audit.canaries"):
        A.canary_inclusion(cand, 6, 0)
    with pytest.raises(ValueError, match="repeated"):
        A.canary_inclusion([1, 1, 2], 1, 0)
