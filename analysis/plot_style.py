"""Shared look of the figures: fonts, colours, log-log ROC axes, and an ε axis with ∞ at its right end."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from analysis.tables import FAMILY_ORDER  # noqa: E402

STYLE = {
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 150,
    "figure.dpi": 100,
}
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v"]
FPR_LEVELS = [  # (metrics column, FPR, colour) of the TPR-at-fixed-FPR curves
    ("tpr_at_10pct_fpr", 0.1, "#0072B2"),
    ("tpr_at_1pct_fpr", 0.01, "#D55E00"),
    ("tpr_at_0_1pct_fpr", 0.001, "#009E73"),
]


def percent(fpr: float) -> str:
    return f"{fpr * 100:g}%"


def ordered_families(names: Iterable[str]) -> list[str]:
    """The paper's order (ddpm, smld, vpsde, vesde), then any other family alphabetically."""
    names = set(names)
    return [f for f in FAMILY_ORDER if f in names] + sorted(names - set(FAMILY_ORDER))


def colors(names: Iterable[str]) -> dict[str, str]:
    """A stable colour (Okabe-Ito, colour-blind safe) per name."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def subplots(nrows: int, ncols: int, width: float = 3.8, height: float = 3.3, **kwargs):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs
        )
    return fig, axes


def save(fig, out_dir: str, name: str) -> str:
    """Write ``fig`` as ``<out_dir>/<name>.png`` and close it; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.png")
    with plt.rc_context(STYLE):
        fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def roc_axes(ax, n_nonmembers: int, n_members: int) -> None:
    """Log-log ROC axes from the decade below 1/n to 1: the chance diagonal, and FPR < 1/n shaded."""
    lowest = 1.0 / max(n_nonmembers, n_members, 1)
    lo = 10.0 ** math.floor(math.log10(lowest) - 1e-9)
    ax.axvspan(lo, 1.0 / n_nonmembers, color="0.92", linewidth=0, label="FPR < 1/#non-members")
    ax.plot([lo, 1], [lo, 1], color="0.35", linestyle=":", linewidth=1.2, label="chance", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.05)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")


def epsilon_positions(values: Iterable[float]) -> tuple[dict[float, float], float | None]:
    """x position of each ε on a log axis: ε itself, and ∞ (no DP) 1.5 decades right of the largest ε."""
    values = list(values)
    finite = [v for v in values if np.isfinite(v) and v > 0]
    top = max(finite) * 10**1.5 if finite else 1.0
    has_inf = any(not np.isfinite(v) for v in values)
    return {v: (v if np.isfinite(v) else top) for v in values}, (top if has_inf else None)


def epsilon_axis(ax, values: Iterable[float], label: str) -> None:
    """Log ε axis: ticks at decades (or at the values, over less than a decade), ∞ at the right end."""
    values = list(values)
    pos, inf_x = epsilon_positions(values)
    finite = sorted({v for v in values if np.isfinite(v) and v > 0})
    ax.set_xscale("log")
    ticks, labels = [], []
    if finite:
        lo, hi = finite[0] / 1.5, finite[-1] * 1.5
        decades = [10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
        decades = [d for d in decades if lo <= d <= hi]
        if len(decades) < 2:
            decades = sorted({float(f"{v:.2g}") for v in finite})
        ticks, labels = decades, [f"{d:g}" for d in decades]
    if inf_x is not None:
        ticks.append(inf_x)
        labels.append("∞\n(no DP)")
        if finite:  # mark the break between the finite ε and ∞
            ax.axvline(finite[-1] * 10**0.75, color="0.6", linewidth=0.8, linestyle=(0, (2, 3)))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(labels)
    xs = list(pos.values())
    ax.set_xlim(min(xs) / 2.0, max(xs) * 2.0)
    ax.set_xlabel(label)
