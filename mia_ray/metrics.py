"""ROC metrics of a membership-inference attack: pure functions of (scores, is_member).

Conventions shared by every function here:

* Members are the positive class; a higher score means "more member-like".
* ``scores`` and ``is_member`` are 1-D arrays of the same shape; ``is_member`` holds booleans or 0/1.
  Both classes must be non-empty. Violations raise ``ValueError``.
* Non-finite scores are ranked, not rejected: NaN and -inf become a value just below every finite
  score (least member-like; NaN ties with -inf), +inf a value just above every finite score (most
  member-like). An attack that fails on a sample thus counts against it, never for it.
* Tied scores form one ROC point (scikit-learn's grouping), so a tie never buys a free TPR step.
* TPR at a target FPR is the largest TPR among ROC points with FPR <= target. With n non-members the
  smallest non-zero FPR is 1/n; a target below it is reported as NaN, never as a misleading number.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as _skm

FPR_TARGETS = {
    "tpr_at_10pct_fpr": 0.1,
    "tpr_at_1pct_fpr": 0.01,
    "tpr_at_0_1pct_fpr": 0.001,
    "tpr_at_0_01pct_fpr": 0.0001,
}

SUMMARY_KEYS = (
    "n_members",
    "n_nonmembers",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "asr",
    "tpr_at_10pct_fpr",
    "tpr_at_1pct_fpr",
    "tpr_at_1pct_fpr_ci_low",
    "tpr_at_1pct_fpr_ci_high",
    "tpr_at_0_1pct_fpr",
    "tpr_at_0_01pct_fpr",
)

_NAMED_STATS = ("auc", "asr", *FPR_TARGETS)
_FPR_TOL = 1e-9  # slack on target_fpr * n_nonmembers so that e.g. 0.01 * 100 counts as exactly 1
_MAX_CELLS = 1 << 22  # bootstrap chunk size: resamples x distinct scores per chunk


def _below(x: float) -> float:
    y = x - 1.0
    return y if y < x else float(np.nextafter(x, -np.inf))


def _above(x: float) -> float:
    y = x + 1.0
    return y if y > x else float(np.nextafter(x, np.inf))


def _prepare(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    """Validate inputs; return finite float64 scores (non-finite ranked as documented) and bool labels."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member)
    if s.shape != m.shape:
        raise ValueError(f"scores and is_member must have the same shape, got {s.shape} and {m.shape}")
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("is_member must hold booleans or 0/1 values")
        m = m.astype(bool)
    n_pos = int(m.sum())
    if n_pos == 0 or n_pos == m.size:
        n_neg = m.size - n_pos
        raise ValueError(f"need both members and non-members, got {n_pos} members and {n_neg} non-members")
    finite = np.isfinite(s)
    if not finite.all():
        lo, hi = (float(s[finite].min()), float(s[finite].max())) if finite.any() else (0.0, 0.0)
        s = s.copy()
        s[np.isnan(s) | (s == -np.inf)] = _below(lo)
        s[s == np.inf] = _above(hi)
    return s, m


def _allowed_fp(target_fpr: float, n_neg: int) -> int:
    """Number of false positives allowed at ``target_fpr``; 0 means the target is unresolvable."""
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    return int(np.floor(target_fpr * n_neg + _FPR_TOL))


def allowed_false_positives(target_fpr: float, n_nonmembers: int) -> int:
    """floor(target_fpr * n_nonmembers) with the same float slack as the TPR@FPR metrics (0.01 * 100 -> 1);
    0 means the target is below 1 / n_nonmembers and not resolvable."""
    return _allowed_fp(target_fpr, n_nonmembers)


def roc_curve(scores, is_member) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``, one point per distinct score (``drop_intermediate=False``)."""
    s, m = _prepare(scores, is_member)
    return _skm.roc_curve(m, s, drop_intermediate=False)


def auc(scores, is_member) -> float:
    """Area under the ROC curve (probability that a member outscores a non-member, ties count 1/2)."""
    s, m = _prepare(scores, is_member)
    return float(_skm.roc_auc_score(m, s))


def mann_whitney_twice_u(scores, is_member) -> int:
    """2U, an exact integer: 2 per (member, non-member) pair the member wins, 1 per tie; AUC = 2U / (2 P N).

    For comparing AUCs of the same samples exactly: scikit-learn's trapezoid sum (``auc``) can give two
    equal AUCs floats that differ in the last bit (3 members and 5 non-members with AUC 6/15 give
    0.39999999999999997 or 0.4 depending on the ranks), so a float comparison breaks an exact tie at random.
    """
    s, m = _prepare(scores, is_member)
    neg = np.sort(s[~m])
    pos = s[m]
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return int(2 * below.sum() + ties.sum())


def asr(scores, is_member) -> float:
    """Attack success rate: max over thresholds of the balanced accuracy (TPR + 1 - FPR) / 2."""
    fpr, tpr, _ = roc_curve(scores, is_member)
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def tpr_at_fpr(scores, is_member, target_fpr: float) -> float:
    """Largest TPR among ROC points with FPR <= ``target_fpr``; NaN if ``target_fpr`` < 1/n_nonmembers."""
    s, m = _prepare(scores, is_member)
    fpr, tpr, _ = _skm.roc_curve(m, s, drop_intermediate=False)
    return _tpr_on_roc(fpr, tpr, int((~m).sum()), target_fpr)


def _tpr_on_roc(fpr: np.ndarray, tpr: np.ndarray, n_neg: int, target_fpr: float) -> float:
    k = _allowed_fp(target_fpr, n_neg)
    if k < 1:
        return float("nan")
    return float(tpr[np.rint(fpr * n_neg) <= k].max())


def _batch_stats(codes_pos: np.ndarray, codes_neg: np.ndarray, n_codes: int, stats: tuple[str, ...]):
    """Named statistics of B resamples at once; ``codes_*`` are (B, n) dense ranks of the scores.

    Per resample, histograms of member / non-member counts per distinct score give the grouped ROC
    (one point per distinct score, as scikit-learn), hence AUC (Mann-Whitney with ties), ASR and TPRs.
    """
    b, n_pos = codes_pos.shape
    n_neg = codes_neg.shape[1]
    offsets = (np.arange(b) * n_codes)[:, None]
    h_pos = np.bincount((codes_pos + offsets).ravel(), minlength=b * n_codes).reshape(b, n_codes)
    h_neg = np.bincount((codes_neg + offsets).ravel(), minlength=b * n_codes).reshape(b, n_codes)
    out = np.empty((b, len(stats)))
    # TP / FP at threshold "score >= code c", for c from highest code down to lowest.
    tp = np.cumsum(h_pos[:, ::-1], axis=1)
    fp = np.cumsum(h_neg[:, ::-1], axis=1)
    for j, name in enumerate(stats):
        if name == "auc":
            neg_below = np.cumsum(h_neg, axis=1) - h_neg
            out[:, j] = (h_pos * (2 * neg_below + h_neg)).sum(axis=1) / (2.0 * n_pos * n_neg)
        elif name == "asr":
            # the lowest threshold (TPR = FPR = 1) is a point, so the max is >= 0.5 as in asr()
            out[:, j] = (1.0 + (tp / n_pos - fp / n_neg).max(axis=1)) / 2.0
        else:
            k = _allowed_fp(FPR_TARGETS[name], n_neg)
            out[:, j] = np.nan if k < 1 else np.where(fp <= k, tp, 0).max(axis=1) / n_pos
    return out


def _resample_indices(n_pos: int, n_neg: int, n_boot: int, chunk: int, seed: int):
    """Yield (idx_pos, idx_neg) index arrays of shape (b, n_pos), (b, n_neg), ``n_boot`` rows in all."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        yield rng.integers(0, n_pos, size=(b, n_pos)), rng.integers(0, n_neg, size=(b, n_neg))


def _bootstrap(s: np.ndarray, m: np.ndarray, stat, n_boot: int, seed: int) -> np.ndarray:
    """Stratified bootstrap replicates: (n_boot, n_stats) for a tuple of names, (n_boot, 1) for a callable."""
    pos, neg = s[m], s[~m]
    uniq, codes = np.unique(s, return_inverse=True)
    codes = codes.ravel()
    c_pos, c_neg = codes[m], codes[~m]
    chunk = max(1, _MAX_CELLS // max(uniq.size, pos.size, neg.size))
    labels = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    parts = []
    for idx_pos, idx_neg in _resample_indices(pos.size, neg.size, n_boot, chunk, seed):
        if callable(stat):
            pairs = zip(idx_pos, idx_neg, strict=True)
            vals = [stat(np.concatenate([pos[i], neg[j]]), labels) for i, j in pairs]
            parts.append(np.asarray(vals, dtype=np.float64)[:, None])
        else:
            parts.append(_batch_stats(c_pos[idx_pos], c_neg[idx_neg], uniq.size, stat))
    return np.concatenate(parts) if parts else np.empty((0, 1 if callable(stat) else len(stat)))


def _check_stat(stat) -> None:
    if not callable(stat) and stat not in _NAMED_STATS:
        raise ValueError(f"unknown stat {stat!r}; valid: {', '.join(_NAMED_STATS)} or a callable")


def _percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    scores,
    is_member,
    stat: str | Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile ``level`` interval of ``stat`` over a stratified bootstrap (members and non-members
    resampled separately, with replacement). ``n_boot=0`` gives ``(nan, nan)``; NaN replicates are dropped.

    ``stat`` is a name -- ``"auc"``, ``"asr"`` or a key of ``FPR_TARGETS`` -- computed vectorised over
    all resamples, or a callable ``stat(scores, is_member) -> float`` called once per resample (slower)
    with finite scores (non-finite ones already ranked) and boolean labels, members first.
    """
    _check_stat(stat)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s, m = _prepare(scores, is_member)
    if n_boot == 0:
        return float("nan"), float("nan")
    reps = _bootstrap(s, m, stat if callable(stat) else (stat,), n_boot, seed)
    return _percentile_ci(reps[:, 0], level)


def summarize(scores, is_member, n_boot: int = 200, seed: int = 0) -> dict:
    """All metrics of one attack as a flat dict with the keys of ``SUMMARY_KEYS`` (Parquet columns).

    CIs are 95% stratified-bootstrap percentile intervals sharing one set of resamples; they are NaN
    when ``n_boot=0`` and, for TPR@1%FPR, when the point value is NaN.
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    s, m = _prepare(scores, is_member)
    n_pos = int(m.sum())
    out: dict = {"n_members": n_pos, "n_nonmembers": int(m.size - n_pos)}
    out["auc"] = auc(s, m)
    fpr, tpr, _ = _skm.roc_curve(m, s, drop_intermediate=False)
    out["asr"] = float(np.max((tpr + 1.0 - fpr) / 2.0))
    for name, target in FPR_TARGETS.items():
        out[name] = _tpr_on_roc(fpr, tpr, out["n_nonmembers"], target)
    nan = float("nan")
    out["auc_ci_low"] = out["auc_ci_high"] = nan
    out["tpr_at_1pct_fpr_ci_low"] = out["tpr_at_1pct_fpr_ci_high"] = nan
    if n_boot > 0:
        reps = _bootstrap(s, m, ("auc", "tpr_at_1pct_fpr"), n_boot, seed)
        out["auc_ci_low"], out["auc_ci_high"] = _percentile_ci(reps[:, 0], 0.95)
        if not np.isnan(out["tpr_at_1pct_fpr"]):
            lo, hi = _percentile_ci(reps[:, 1], 0.95)
            out["tpr_at_1pct_fpr_ci_low"], out["tpr_at_1pct_fpr_ci_high"] = lo, hi
    return {key: out[key] for key in SUMMARY_KEYS}
