"""Empirical lower bounds on the epsilon of (epsilon, delta)-DP from attack outcomes (docs/audit.md).

Pure functions (numpy / scipy). Scores follow :mod:`mia_ray.metrics`: higher = more member-like; NaN counts as
-inf. The decision rule is always "score >= threshold -> member".

* **Clopper-Pearson threshold bound** (Jagielski et al. 2020; Nasr et al. 2021). (epsilon, delta)-DP implies,
  for any rule, TPR <= e^eps FPR + delta and (swapping the neighbouring data sets) TNR <= e^eps FNR + delta.
  With one-sided Clopper-Pearson bounds FPR_hi, FNR_hi at alpha / 2 each (so both hold together with
  probability >= 1 - alpha; TPR_lo = 1 - FNR_hi, TNR_lo = 1 - FPR_hi):
  eps_LB = max(0, ln((TPR_lo - delta) / FPR_hi), ln((TNR_lo - delta) / FNR_hi)); a direction whose numerator
  is <= 0 proves nothing and counts as 0. The bound is clipped at 0 because "epsilon >= 0" is no evidence.
* **GDP bound** (Nasr et al. 2023): mu_LB = Phi^-1(1 - FPR_hi) - Phi^-1(FNR_hi) (same two bounds), and the
  epsilon of mu_LB-GDP at delta, i.e. the root of Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) = delta;
  0 when mu_LB <= 0 or when delta(0) <= delta already.
* The threshold must not be chosen on the counts that make the bound: :func:`audit_rows` chooses it on the
  calibration half and counts on the test half; :func:`audit_rows_bonferroni` searches every threshold of the
  same data and pays alpha / N (N = number of samples, a data-independent upper bound on the number of
  distinct rules).
* **One-run audit** (Steinke, Nasr & Jagielski 2023): m canaries each included with probability 1/2; the
  attack guesses "in" on its k+ highest and "out" on its k- lowest scores (r = k+ + k- guesses), v correct.
  Under (eps, delta)-DP, P[V >= v] <= p(eps) = f(v) + 2 m delta max_{1<=i<=v} (f(v - i) - f(v)) / i with
  f(u) = P[Bin(r, q) >= u], q = e^eps / (1 + e^eps) (their Theorem 5.2; delta = 0 leaves f(v)).
  eps_LB = inf{eps >= 0 : p(eps) > alpha}: every eps below it is rejected at level alpha.

Facts read from google-deepmind/jax_privacy ``auditing.py`` and tensorflow_privacy ``epsilon_lower_bound.py``
(alpha split over the two rates, the one-run p-value, the log-domain GDP conversion); the code is our own.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special, stats

from . import clopper_pearson as cp
from .errors import ConfigError

_CANARY_TAG = 0xCA7A5  # mixed into the seed so canaries do not reuse the split's random stream

AUDIT_KEYS = (
    "method",
    "threshold_selection",
    "n_hypotheses",
    "alpha",
    "delta",
    "threshold",
    "direction",
    "tp",
    "fn",
    "fp",
    "tn",
    "fpr_high",
    "fnr_high",
    "mu_low",
    "epsilon_lb",
)

ONE_RUN_KEYS = ("m", "k_plus", "k_minus", "n_guesses", "n_correct", "alpha", "delta", "epsilon_lb")


# --- checks -----------------------------------------------------------------------------------------


def _check_level(alpha: float, delta: float, delta_open: bool = False) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    lo_ok = delta > 0.0 if delta_open else delta >= 0.0
    if not (lo_ok and delta < 1.0):
        raise ValueError(f"delta must be in {'(0' if delta_open else '[0'}, 1), got {delta}")


def _counts(tp, fn, fp, tn) -> tuple[np.ndarray, ...]:
    arrs = [np.asarray(x, dtype=np.int64) for x in (tp, fn, fp, tn)]
    if any((a < 0).any() for a in arrs):
        raise ValueError("confusion counts must be >= 0")
    return tuple(arrs)


def _labels(is_member, size: int) -> np.ndarray:
    m = np.asarray(is_member)
    if m.shape != (size,):
        raise ValueError(f"is_member must be 1-D with {size} entries, got shape {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("is_member must hold booleans or 0/1 values")
        m = m.astype(bool)
    if m.all() or not m.any():
        raise ValueError("need both members and non-members")
    return m


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    return np.where(np.isnan(s), -np.inf, s)


# --- threshold bounds from counts -------------------------------------------------------------------


def _rate_bounds(tp, fn, fp, tn, alpha_each):
    """(FPR_hi, FNR_hi) one-sided at ``alpha_each`` each; vectorised over thresholds (same totals)."""
    n_pos, n_neg = int(np.ravel(tp + fn)[0]), int(np.ravel(fp + tn)[0])
    if n_pos < 1 or n_neg < 1:
        raise ValueError("need at least one member and one non-member")
    return np.asarray(cp.upper(fp, n_neg, alpha_each)), np.asarray(cp.upper(fn, n_pos, alpha_each))


def _cp_eps(fpr_hi, fnr_hi, delta):
    """(eps, direction index) per threshold: 0 = TPR/FPR, 1 = TNR/FNR (the larger log-ratio, ties -> 0); eps
    clipped at 0. A direction whose numerator is <= 0 has log-ratio -inf: it proves nothing, so it is named
    only when the other one proves nothing either (it was counted as 0 once, and then named ahead of a finite
    negative log-ratio of the other direction)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.where(1.0 - fnr_hi > delta, np.log((1.0 - fnr_hi - delta) / fpr_hi), -np.inf)
        e2 = np.where(1.0 - fpr_hi > delta, np.log((1.0 - fpr_hi - delta) / fnr_hi), -np.inf)
    return np.maximum(0.0, np.maximum(e1, e2)), (e2 > e1).astype(int)


def _mu(fpr_hi, fnr_hi):
    return stats.norm.isf(fpr_hi) - stats.norm.ppf(fnr_hi)


def epsilon_lower_bound_cp(tp, fn, fp, tn, delta: float, alpha: float = 0.05) -> float:
    """Clopper-Pearson epsilon lower bound of one rule's confusion counts (module docstring); valid with
    probability >= 1 - alpha only if the rule was fixed without looking at these counts."""
    _check_level(alpha, delta)
    tp, fn, fp, tn = _counts(tp, fn, fp, tn)
    fpr_hi, fnr_hi = _rate_bounds(tp, fn, fp, tn, alpha / 2.0)
    return float(_cp_eps(fpr_hi, fnr_hi, delta)[0])


def gdp_mu_lower_bound(tp, fn, fp, tn, alpha: float = 0.05) -> float:
    """mu_LB = Phi^-1(1 - FPR_hi) - Phi^-1(FNR_hi), bounds one-sided at alpha / 2 each."""
    _check_level(alpha, 0.0)
    tp, fn, fp, tn = _counts(tp, fn, fp, tn)
    return float(_mu(*_rate_bounds(tp, fn, fp, tn, alpha / 2.0)))


def gdp_delta(eps: float, mu: float) -> float:
    """delta(eps) of mu-GDP (Dong, Roth & Su 2019, Cor. 2.13): Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    return float(np.exp(_log_gdp_delta(eps, mu)))


def _log_gdp_delta(eps: float, mu: float) -> float:
    la = stats.norm.logcdf(-eps / mu + mu / 2.0)
    x = eps + stats.norm.logcdf(-eps / mu - mu / 2.0) - la
    return -np.inf if x >= 0.0 else float(la + np.log1p(-np.exp(x)))


def epsilon_from_gdp(mu: float, delta: float) -> float:
    """Smallest eps >= 0 with delta(eps) <= delta for mu-GDP (brentq in the log domain); 0 when mu <= 0."""
    _check_level(0.05, delta, delta_open=True)
    if not mu > 0.0:
        return 0.0
    if not np.isfinite(mu):
        return float("inf")
    target = np.log(delta)

    def gap(e):
        return _log_gdp_delta(e, mu) - target

    if gap(0.0) <= 0.0:
        return 0.0
    hi = 1.0
    while gap(hi) > 0.0:
        hi *= 2.0
    return float(optimize.brentq(gap, hi / 2.0 if hi > 1.0 else 0.0, hi, xtol=1e-12, rtol=1e-12))


def epsilon_lower_bound_gdp(tp, fn, fp, tn, delta: float, alpha: float = 0.05) -> float:
    """GDP-route epsilon lower bound of one rule's confusion counts (module docstring)."""
    _check_level(alpha, delta, delta_open=True)
    return epsilon_from_gdp(gdp_mu_lower_bound(tp, fn, fp, tn, alpha), delta)


# --- thresholds on scores ---------------------------------------------------------------------------


def confusion(scores, is_member, threshold: float) -> tuple[int, int, int, int]:
    """(tp, fn, fp, tn) of the rule "score >= threshold -> member"."""
    s = _scores(scores)
    m = _labels(is_member, s.size)
    pred = s >= threshold
    tp, fp = int((pred & m).sum()), int((pred & ~m).sum())
    return tp, int(m.sum()) - tp, fp, int((~m).sum()) - fp


def _all_thresholds(s: np.ndarray, m: np.ndarray):
    """Distinct scores (ascending) and the confusion counts of "score >= t" at each."""
    t = np.unique(s)
    pos, neg = np.sort(s[m]), np.sort(s[~m])
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return t, tp, pos.size - tp, fp, neg.size - fp


_DIRECTIONS = ("tpr/fpr", "tnr/fnr")


def _rows_at(threshold_cp, threshold_gdp, s, m, delta, alpha_each, selection, n_hyp, alpha) -> list[dict]:
    """The CP row at ``threshold_cp`` and the GDP row at ``threshold_gdp``, counted on (s, m)."""
    rows = []
    for method, t in (("clopper_pearson", threshold_cp), ("gdp", threshold_gdp)):
        tp, fn, fp, tn = confusion(s, m, t)
        fpr_hi, fnr_hi = (float(x) for x in _rate_bounds(tp, fn, fp, tn, alpha_each))
        if method == "clopper_pearson":
            eps, d = _cp_eps(np.asarray(fpr_hi), np.asarray(fnr_hi), delta)
            direction, mu, eps = _DIRECTIONS[int(d)], float("nan"), float(eps)
        else:
            direction, mu = None, float(_mu(fpr_hi, fnr_hi))
            eps = epsilon_from_gdp(mu, delta)
        values = (method, selection, int(n_hyp), float(alpha), float(delta), float(t), direction)
        values += (tp, fn, fp, tn, fpr_hi, fnr_hi, mu, eps)
        rows.append(dict(zip(AUDIT_KEYS, values, strict=True)))
    return rows


def audit_rows(scores, is_member, in_calibration, delta: float, alpha: float = 0.05) -> list[dict]:
    """Two rows (keys ``AUDIT_KEYS``): the Clopper-Pearson and the GDP bound of one score vector (e.g. the
    attack at its calibrated step). Each threshold is the distinct calibration score that maximises that
    bound's statistic on the calibration half (CP: eps at alpha / 2 per rate, ties -> larger mu_LB, then the
    lower threshold; GDP: mu_LB, ties -> lower threshold); the bound itself is counted on the test half only."""
    _check_level(alpha, delta, delta_open=True)
    s = _scores(scores)
    m = _labels(is_member, s.size)
    c = np.asarray(in_calibration, dtype=bool)
    if c.shape != s.shape:
        raise ValueError(f"in_calibration must be 1-D with {s.size} entries, got shape {c.shape}")
    _labels(m[c], int(c.sum()))
    _labels(m[~c], int((~c).sum()))
    t, tp, fn, fp, tn = _all_thresholds(s[c], m[c])
    fpr_hi, fnr_hi = _rate_bounds(tp, fn, fp, tn, alpha / 2.0)
    eps, _ = _cp_eps(fpr_hi, fnr_hi, delta)
    mu = _mu(fpr_hi, fnr_hi)
    i_cp = np.lexsort((np.arange(t.size), -mu, -eps))[0]
    i_gdp = np.lexsort((np.arange(t.size), -mu))[0]
    return _rows_at(t[i_cp], t[i_gdp], s[~c], m[~c], delta, alpha / 2.0, "calibration", 1, alpha)


def audit_rows_bonferroni(scores, is_member, delta: float, alpha: float = 0.05) -> list[dict]:
    """Two rows like :func:`audit_rows` without a calibration half: every distinct score is a candidate
    threshold on the same data, paid for by Bonferroni over N = len(scores) rules (each rate at alpha / 2N)."""
    _check_level(alpha, delta, delta_open=True)
    s = _scores(scores)
    m = _labels(is_member, s.size)
    n_hyp = s.size
    a_each = alpha / (2.0 * n_hyp)
    t, tp, fn, fp, tn = _all_thresholds(s, m)
    fpr_hi, fnr_hi = _rate_bounds(tp, fn, fp, tn, a_each)
    eps, _ = _cp_eps(fpr_hi, fnr_hi, delta)
    mu = _mu(fpr_hi, fnr_hi)
    i_cp = np.lexsort((np.arange(t.size), -eps))[0]
    i_gdp = np.lexsort((np.arange(t.size), -mu))[0]
    return _rows_at(t[i_cp], t[i_gdp], s, m, delta, a_each, "bonferroni", n_hyp, alpha)


# --- one-run audit ----------------------------------------------------------------------------------


def one_run_p_value(m: int, r: int, v: int, eps, delta: float = 0.0):
    """Steinke et al.'s bound on P[V >= v] under (eps, delta)-DP (module docstring); vectorised over eps."""
    _check_one_run(m, r, v, delta)
    q = special.expit(np.asarray(eps, dtype=np.float64))[..., None]
    beta = stats.binom.sf(v - 1, r, q)[..., 0]  # f(v) = P[Bin(r, q) >= v]
    if delta == 0.0 or v == 0:
        p = beta
    else:
        i = np.arange(1, v + 1)
        f_lower = stats.binom.sf(v - i - 1, r, q)  # f(v - i), shape (..., v)
        extra = np.max((f_lower - beta[..., None]) / i, axis=-1)
        p = np.minimum(1.0, beta + 2.0 * m * delta * extra)
    return float(p) if np.ndim(p) == 0 else p


def _check_one_run(m, r, v, delta) -> None:
    if not (0 <= v <= r <= m) or m < 1:
        raise ValueError(f"need 0 <= v <= r <= m and m >= 1, got m={m}, r={r}, v={v}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


_GRID_STEP = 0.05  # first-crossing search: the delta term can make p(eps) non-monotone; bracket on a grid


def epsilon_one_run(m: int, r: int, v: int, alpha: float = 0.05, delta: float = 0.0) -> float:
    """eps_LB = inf{eps >= 0 : p(eps) > alpha}, located on a grid of step 0.05 then refined by brentq (for
    delta = 0, p is increasing and this is the usual root). 0 when p(0) > alpha."""
    _check_one_run(m, r, v, delta)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")

    def gap(e):
        return one_run_p_value(m, r, v, e, delta) - alpha

    if gap(0.0) > 0.0:
        return 0.0
    lo = 0.0
    while True:
        grid = lo + _GRID_STEP * np.arange(1, 401)
        above = np.flatnonzero(np.asarray(one_run_p_value(m, r, v, grid, delta)) > alpha)
        if above.size:
            hi = float(grid[above[0]])
            lo = hi - _GRID_STEP
            break
        lo = float(grid[-1])
    return float(optimize.brentq(gap, lo, hi, xtol=1e-10))


def one_run_guesses(scores, included, k_plus: int, k_minus: int = 0) -> tuple[int, int]:
    """(r, v): guess "in" on the ``k_plus`` highest scores and "out" on the ``k_minus`` lowest, abstain on
    the rest; v = correct guesses. Ties are broken by position (stable sort), NaN scores rank lowest."""
    s = _scores(scores)
    inc = np.asarray(included, dtype=bool)
    if inc.shape != s.shape:
        raise ValueError(f"included must be 1-D with {s.size} entries, got shape {inc.shape}")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > s.size:
        raise ValueError(f"need k_plus, k_minus >= 0 and k_plus + k_minus <= m={s.size}")
    order = np.argsort(-s, kind="stable")
    top, bottom = order[:k_plus], order[s.size - k_minus :]
    return k_plus + k_minus, int(inc[top].sum() + (~inc[bottom]).sum())


def canary_audit_row(scores, included, k_plus: int, k_minus: int = 0, alpha: float = 0.05, delta: float = 0.0) -> dict:
    """One-run audit of one (trial, attack[, step]) over its canaries: a dict with keys ``ONE_RUN_KEYS``."""
    r, v = one_run_guesses(scores, included, k_plus, k_minus)
    m = int(np.asarray(included).size)
    eps = epsilon_one_run(m, r, v, alpha, delta)
    return dict(zip(ONE_RUN_KEYS, (m, int(k_plus), int(k_minus), r, v, float(alpha), float(delta), eps), strict=True))


def canary_candidates(pool_size: int, *exclude) -> np.ndarray:
    """Sorted pool ids not in any of ``exclude`` (e.g. the split's members and evaluation non-members)."""
    used = np.concatenate([np.asarray(e, dtype=np.int64).ravel() for e in exclude]) if exclude else []
    return np.setdiff1d(np.arange(int(pool_size), dtype=np.int64), used)


def canary_inclusion(candidate_ids, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(canary ids sorted, included mask)``: m canaries drawn from ``candidate_ids`` (ids outside the
    evaluation sets and the rest of the training set), each included in training independently with
    probability 1/2. A pure function of the *set* of candidates, m and seed."""
    ids = np.unique(np.asarray(candidate_ids, dtype=np.int64))
    if ids.size != np.asarray(candidate_ids).size:
        raise ValueError("candidate_ids holds repeated ids")
    if isinstance(m, bool) or int(m) != m or m < 1 or m > ids.size:
        raise ConfigError(
            f"audit.canaries = {m!r}; allowed: an integer in [1, {ids.size}] (the pool images outside the split)"
        )
    rng = np.random.default_rng([int(seed), _CANARY_TAG])
    chosen = np.sort(ids[rng.permutation(ids.size)[: int(m)]])
    included = rng.random(int(m)) < 0.5
    return chosen, included
