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


# AUCs this close are one AUC: scikit-learn's trapezoid sum gives exactly equal AUCs floats that differ in the
# last bit (6/15 as 0.39999999999999997 or 0.4), and means over seeds add a few ulps more. Distinct AUCs of one
# trial differ by at least 1 / (2 P N) (5e-11 at 100,000 members and non-members), far above this.
AUC_TIE = 1e-12


def best_rows(frame, keys: list[str]):
    """Per group of ``keys``, the row of highest AUC (ties -- AUCs within ``AUC_TIE`` -- the smallest step);
    rows without AUC are skipped."""
    rows = frame[frame["auc"].notna()]
    if "step" in rows:
        rows = rows.sort_values("step", kind="stable", na_position="first")
    if rows.empty:
        return rows.reset_index(drop=True)
    groups = rows.groupby(keys, sort=True, dropna=False)
    near = rows[rows["auc"] >= groups["auc"].transform("max") - AUC_TIE]
    first = near.groupby(keys, sort=True, dropna=False).head(1)  # in step order: the smallest step
    order = first.groupby(keys, sort=True, dropna=False).ngroup().sort_values(kind="stable")  # groups as idxmax's
    return first.loc[order.index].reset_index(drop=True)
