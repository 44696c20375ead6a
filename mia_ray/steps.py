"""Diffusion steps in results: ``None`` for a step-free attack, and the best step of a metrics table.

One decision each, shared by the trial, the sweep and ``analysis`` (pure: numpy/pandas only).
"""

from __future__ import annotations

import math


def is_null(step) -> bool:
    """True for a step-free row's step: None, NaN (a null read back through numpy) or pandas' NA."""
    if step is None:
        return True
    if type(step).__name__ == "NAType":
        return True
    return isinstance(step, float) and math.isnan(step)


def as_step(step) -> int | None:
    """A step as stored: a Python int, or None for a step-free attack."""
    return None if is_null(step) else int(step)


def is_stepwise(steps) -> bool:
    """An attack is step-wise when any of its steps is not null (``Attack.steps`` or a ``step`` column)."""
    return any(not is_null(s) for s in steps)


def best_rows(frame, keys: list[str]):
    """Per group of ``keys``, the row of highest AUC (ties: the smallest step); rows without AUC are skipped."""
    rows = frame[frame["auc"].notna()]
    if "step" in rows:
        rows = rows.sort_values("step", kind="stable", na_position="first")
    if rows.empty:
        return rows.reset_index(drop=True)
    return rows.loc[rows.groupby(keys, sort=True, dropna=False)["auc"].idxmax()].reset_index(drop=True)
