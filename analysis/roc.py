"""ROC curves recomputed from per-sample scores with numpy alone (the conventions of DESIGN.md section 1).

Members are the positive class and a higher score is more member-like. Tied scores form one ROC point.
NaN and -inf scores rank below every finite score, +inf above. TPR at a target FPR is the largest TPR
among ROC points with FPR <= target, and NaN when the target is below 1/n_nonmembers.
"""

from __future__ import annotations

import numpy as np

FPR_TARGETS = {
    "tpr_at_10pct_fpr": 0.1,
    "tpr_at_1pct_fpr": 0.01,
    "tpr_at_0_1pct_fpr": 0.001,
    "tpr_at_0_01pct_fpr": 0.0001,
}
_FPR_TOL = 1e-9  # 0.01 * 100 non-members allows exactly one false positive


def roc_curve(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` from (0, 0) to (1, 1), one point per distinct score, thresholds decreasing."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member).astype(bool)
    if s.shape != m.shape or s.ndim != 1:
        raise ValueError(f"scores and is_member must be 1-D of one shape, got {s.shape} and {m.shape}")
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need members and non-members, got {n_pos} and {n_neg}")
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.argsort(-s, kind="mergesort")
    s, m = s[order], m[order]
    last_of_tie = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tp = np.cumsum(m)[last_of_tie]
    fp = last_of_tie + 1 - tp
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve (equals P(member score > non-member score), ties 1/2)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def asr(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Attack success rate: the best balanced accuracy (TPR + 1 - FPR) / 2 over thresholds."""
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, n_nonmembers: int, target: float) -> float:
    """Largest TPR with FPR <= ``target``; NaN when ``target`` < 1 / ``n_nonmembers``."""
    allowed = int(np.floor(target * n_nonmembers + _FPR_TOL))
    if allowed < 1:
        return float("nan")
    return float(tpr[np.rint(fpr * n_nonmembers) <= allowed].max())


def roc_metrics(scores, is_member) -> dict:
    """AUC, ASR and TPR at every FPR target of one attack, named as the columns of ``metrics/``."""
    fpr, tpr = roc_curve(scores, is_member)
    n_neg = int((~np.asarray(is_member).astype(bool)).sum())
    out = {"auc": auc(fpr, tpr), "asr": asr(fpr, tpr)}
    out.update({name: tpr_at_fpr(fpr, tpr, n_neg, t) for name, t in FPR_TARGETS.items()})
    return out
