"""Calibrated protocol (docs/audit.md): what an attacker who picks the step and the threshold
*without* the answer reaches. Pure functions of (sample ids, is_member, per-step scores).

The evaluation members and non-members are split, seeded and stratified by membership, into a
**calibration** half and a **test** half (:func:`calibration_halves`). On the calibration half only:

* the step of a step-wise attack is the one with the largest calibration AUC; AUCs that are exactly equal
  are broken towards the **lower** step (:func:`choose_step`);
* for each target FPR the threshold is a quantile of the calibration non-members' scores
  (:func:`calibrated_threshold`); the rule is "score >= threshold -> member".

On the test half the rule is applied as is: realized FPR and TPR with two-sided Clopper-Pearson intervals
(conditional on the threshold, i.e. intervals for the true FPR / TPR *of the calibrated rule*), and the AUC at
the chosen step. Scores follow :mod:`mia_ray.metrics` (higher = more member-like); NaN scores count as -inf
(least member-like), +-inf are kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import clopper_pearson as cp
from . import metrics

_TAG = 0xCA11B  # mixed into the seed: the halves do not reuse the split's random stream of the same seed

CALIBRATED_KEYS = (
    "chosen_step",
    "calibration_auc",
    "test_auc",
    "test_auc_ci_low",
    "test_auc_ci_high",
    "oracle_metric",
    "fpr_target",
    "threshold",
    "calibration_fpr",
    "test_fp",
    "test_fpr",
    "test_fpr_ci_low",
    "test_fpr_ci_high",
    "test_tp",
    "test_tpr",
    "test_tpr_ci_low",
    "test_tpr_ci_high",
    "n_cal_members",
    "n_cal_nonmembers",
    "n_test_members",
    "n_test_nonmembers",
)


def _labels(is_member, size: int | None = None) -> np.ndarray:
    m = np.asarray(is_member)
    if m.ndim != 1 or (size is not None and m.size != size):
        raise ValueError(f"is_member must be 1-D with {size} entries, got shape {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("is_member must hold booleans or 0/1 values")
        m = m.astype(bool)
    return m


def _oriented(scores, size: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (size,):
        raise ValueError(f"scores must be 1-D with {size} entries, got shape {s.shape}")
    return np.where(np.isnan(s), -np.inf, s)


def calibration_halves(sample_ids, is_member, seed: int) -> np.ndarray:
    """Boolean mask, True = calibration half. Stratified: ``n // 2`` of the members and ``n // 2`` of the
    non-members (the odd one goes to the test half). A pure function of the *set* of (id, membership) pairs
    and ``seed``: ids are sorted before a seeded permutation per class, so row order does not matter."""
    ids = np.asarray(sample_ids)
    m = _labels(is_member, ids.size)
    if ids.ndim != 1:
        raise ValueError(f"sample_ids must be 1-D, got shape {ids.shape}")
    if np.unique(ids).size != ids.size:
        raise ValueError("sample_ids holds repeated ids")
    rng = np.random.default_rng([int(seed), _TAG])
    mask = np.zeros(ids.size, bool)
    for cls in (True, False):
        rows = np.flatnonzero(m == cls)
        rows = rows[np.argsort(ids[rows], kind="stable")]  # canonical order: by id
        chosen = rng.permutation(rows.size)[: rows.size // 2]
        mask[rows[chosen]] = True
    return mask


def _check_halves(m: np.ndarray, in_calibration) -> np.ndarray:
    c = _labels(in_calibration, m.size)
    for name, half in (("calibration", c), ("test", ~c)):
        if not (m & half).any() or not (~m & half).any():
            raise ValueError(f"the {name} half needs members and non-members")
    return c


def _steps(scores_by_step: Mapping) -> list:
    if not scores_by_step:
        raise ValueError("scores_by_step is empty")
    keys = list(scores_by_step)
    if None in keys:
        if len(keys) != 1:
            raise ValueError("a step-free attack has the single key None; got steps and None mixed")
        return keys
    return sorted(int(k) for k in keys)


def choose_step(scores_by_step: Mapping, is_member, in_calibration) -> tuple[int | None, float]:
    """``(step, calibration AUC)``: the step with the largest AUC on the calibration half; exactly equal
    AUCs go to the lower step. ``scores_by_step`` maps step -> per-sample scores (``{None: scores}`` for a
    step-free attack, which returns step None)."""
    m = _labels(is_member)
    c = _check_halves(m, in_calibration)
    best_step, best_u = None, -1
    for step in _steps(scores_by_step):
        s = _oriented(scores_by_step[step], m.size)
        u = metrics.mann_whitney_twice_u(s[c], m[c])  # exact: equal AUCs compare equal (not the float AUC)
        if u > best_u:  # strict: a tie keeps the lower step seen first
            best_step, best_u = step, u
    s = _oriented(scores_by_step[best_step], m.size)
    return best_step, float(metrics.auc(s[c], m[c]))


def calibrated_threshold(nonmember_scores, target_fpr: float) -> float:
    """Threshold for the rule "score >= t -> member" from calibration non-member scores.

    With n scores and k = floor(target_fpr * n) allowed false positives: t is the smallest calibration
    non-member score v with #{scores >= v} <= k -- without ties the k-th largest score, so the calibration
    FPR is exactly k / n <= target. If ties at the top leave no such score, t is the next float above the
    largest score (calibration FPR 0). NaN when k = 0 (target < 1 / n: not resolvable on this half) or when
    no finite threshold can exclude the top scores (they are +inf). For exchangeable continuous scores the
    expected FPR of the rule on new non-members is k / (n + 1) <= target.
    """
    s = np.sort(np.where(np.isnan(np.asarray(nonmember_scores, np.float64)), -np.inf, nonmember_scores))
    n = s.size
    if n == 0:
        raise ValueError("no calibration non-member scores")
    k = metrics.allowed_false_positives(target_fpr, n)
    if k < 1:
        return float("nan")
    vals = np.unique(s)
    count_ge = n - np.searchsorted(s, vals, side="left")  # #{scores >= v} for each distinct v
    ok = vals[count_ge <= k]
    if ok.size:
        return float(ok[0])
    top = float(s[-1])
    return float("nan") if top == np.inf else float(np.nextafter(top, np.inf))


def _rate(k: int, n: int, level: float) -> tuple[float, float, float]:
    lo, hi = cp.interval(k, n, level)
    return k / n, float(lo), float(hi)


def calibrated_rows(
    scores_by_step: Mapping,
    is_member,
    in_calibration,
    fpr_targets: Mapping[str, float] = metrics.FPR_TARGETS,
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
) -> list[dict]:
    """Calibrated results of one (trial, attack): one dict per target FPR with the keys of
    ``CALIBRATED_KEYS``. ``fpr_targets`` maps the oracle column name (``metrics.FPR_TARGETS``) to its FPR.

    The step is chosen and the thresholds are set on the calibration half; everything named ``test_*`` is
    counted on the test half only. Intervals are two-sided Clopper-Pearson at ``level`` (TPR, FPR) and a
    stratified-bootstrap percentile interval with ``n_boot`` resamples (test AUC; NaN when ``n_boot = 0``).
    Rows whose target is below 1 / n_cal_nonmembers have NaN threshold, rates and intervals, and null counts.
    """
    m = _labels(is_member)
    c = _check_halves(m, in_calibration)
    step, cal_auc = choose_step(scores_by_step, m, c)
    s = _oriented(scores_by_step[step], m.size)
    t_half = ~c
    s_test, m_test = s[t_half], m[t_half]
    n_cal_nm = int((c & ~m).sum())
    test_pos, test_neg = s_test[m_test], s_test[~m_test]
    ci = metrics.bootstrap_ci(s_test, m_test, "auc", n_boot=n_boot, level=level, seed=seed)
    common = {
        "chosen_step": step,
        "calibration_auc": cal_auc,
        "test_auc": metrics.auc(s_test, m_test),
        "test_auc_ci_low": ci[0],
        "test_auc_ci_high": ci[1],
        "n_cal_members": int((c & m).sum()),
        "n_cal_nonmembers": n_cal_nm,
        "n_test_members": int(test_pos.size),
        "n_test_nonmembers": int(test_neg.size),
    }
    nan = float("nan")
    rows = []
    for name, target in fpr_targets.items():
        row = dict(common, oracle_metric=name, fpr_target=float(target))
        t = calibrated_threshold(s[c & ~m], target)
        if np.isnan(t):
            row.update(threshold=nan, calibration_fpr=nan, test_fp=None, test_tp=None)
            row.update({f"test_{r}{x}": nan for r in ("fpr", "tpr") for x in ("", "_ci_low", "_ci_high")})
        else:
            fp, tp = int((test_neg >= t).sum()), int((test_pos >= t).sum())
            row.update(threshold=t, calibration_fpr=float((s[c & ~m] >= t).sum() / n_cal_nm), test_fp=fp, test_tp=tp)
            row["test_fpr"], row["test_fpr_ci_low"], row["test_fpr_ci_high"] = _rate(fp, test_neg.size, level)
            row["test_tpr"], row["test_tpr_ci_low"], row["test_tpr_ci_high"] = _rate(tp, test_pos.size, level)
        rows.append({k: row[k] for k in CALIBRATED_KEYS})
    return rows
