"""Clopper-Pearson (exact binomial) confidence bounds on a proportion k / n, vectorised over k.

Facts used (Clopper & Pearson 1934): with k successes in n trials, the one-sided ``1 - alpha`` upper bound is
``Beta.ppf(1 - alpha, k + 1, n - k)`` (1 when k = n) and the lower bound ``Beta.ppf(alpha, k, n - k + 1)``
(0 when k = 0). The two-sided ``level`` interval uses ``alpha = (1 - level) / 2`` on each side. The bounds
are conservative: coverage is at least the nominal level for every true proportion.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _check(k, n, alpha) -> tuple[np.ndarray, int]:
    k = np.asarray(k)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    if not np.issubdtype(k.dtype, np.integer) and not np.array_equal(k, np.round(k)):
        raise ValueError("k must hold integer counts")
    if np.any(k < 0) or np.any(k > n):
        raise ValueError(f"k must lie in [0, n={n}]")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return k.astype(np.float64), n


def _out(x: np.ndarray):
    return float(x) if x.ndim == 0 else x


def upper(k, n: int, alpha: float):
    """One-sided ``1 - alpha`` upper bound on the proportion (1 where k = n)."""
    k, n = _check(k, n, alpha)
    with np.errstate(invalid="ignore"):
        b = stats.beta.ppf(1.0 - alpha, k + 1.0, np.maximum(n - k, 1.0))
    return _out(np.where(k >= n, 1.0, b))


def lower(k, n: int, alpha: float):
    """One-sided ``1 - alpha`` lower bound on the proportion (0 where k = 0)."""
    k, n = _check(k, n, alpha)
    with np.errstate(invalid="ignore"):
        b = stats.beta.ppf(alpha, np.maximum(k, 1.0), n - k + 1.0)
    return _out(np.where(k <= 0, 0.0, b))


def interval(k, n: int, level: float = 0.95):
    """Two-sided ``level`` interval ``(low, high)``: each side at ``alpha = (1 - level) / 2``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = (1.0 - level) / 2.0
    return lower(k, n, a), upper(k, n, a)
