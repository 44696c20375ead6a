"""Figures of the schema v2 tables: ε spent against its empirical lower bound per target, and the attack
comparison (AUC and TPR at the lowest resolvable FPR per attack and setting, best step marked)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import plot_style as ps
from analysis.calibrated import attack_comparison_table, audit_table
from analysis.loader import Results


def _target_label(r) -> str:
    eps = "∞" if np.isinf(r["epsilon"]) else f"{r['epsilon']:g}"
    return f"{r['family']} n={r['train_size']} ε={eps} s{r['seed']}"


def epsilon_audit(results: Results, out_dir: str) -> str | None:
    """Per target: ε spent (claimed) beside the largest empirical lower bound over its attacks at the
    calibrated step (Clopper–Pearson filled, GDP hollow); a target without DP has no claim (∞)."""
    t = audit_table(results)
    if t.empty:
        return None
    keys = [c for c in ("dataset", "family", "train_size", "epsilon", "seed") if c in t]
    per = t.groupby(keys, dropna=False).agg(spent=("epsilon_spent", "first"), cp=("epsilon_lb_cp", "max"),
                                            gdp=("epsilon_lb_gdp", "max")).reset_index()
    x = np.arange(len(per))
    finite = np.isfinite(per["spent"]).to_numpy()
    top = max(1.0, np.nanmax(np.r_[per["spent"][finite], per["cp"], per["gdp"]]) * 1.15)
    fig, axes = ps.subplots(1, 1, width=max(6.0, 0.9 * len(per) + 2), height=4.5, layout="constrained")
    ax = axes[0][0]
    ax.bar(x[finite], per["spent"][finite], width=0.6, color="0.85", edgecolor="0.5", label="ε spent (claimed)")
    for i in x[~finite]:
        ax.text(i, top * 0.97, "no DP\n(ε = ∞)", ha="center", va="top", fontsize=8, color="0.4")
    ax.scatter(x, per["cp"], color=ps.PALETTE[1], zorder=3, label="ε lower bound, Clopper–Pearson (judged)")
    ax.scatter(x, per["gdp"], facecolors="none", edgecolors=ps.PALETTE[0], zorder=3,
               label="ε lower bound, GDP (Gaussian assumption)")
    failed = finite & (per["cp"] > per["spent"]).to_numpy()
    for i in x[failed]:
        ax.annotate("failed DP claim", (i, per["cp"][i]), textcoords="offset points", xytext=(0, 6),
                    ha="center", color="red", fontsize=8)
    ax.set_xticks(x, [_target_label(r) for _, r in per.iterrows()], rotation=30, ha="right")
    ax.set_ylim(0, top)
    ax.set_ylabel("ε")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    ax.set_title("Claimed ε against the ε the attacks prove\n(95%, calibrated step, test half)", fontsize=10)
    return ps.save(fig, out_dir, "epsilon_audit")


def attack_comparison(results: Results, out_dir: str) -> str | None:
    """AUC and TPR at the lowest resolvable FPR of every attack per setting (oracle best step, labelled)."""
    t = attack_comparison_table(results)
    if t.empty or t["attack"].nunique() < 1:
        return None
    keys = [c for c in ("dataset", "family", "train_size", "epsilon") if c in t]
    settings = t[keys].drop_duplicates().reset_index(drop=True)
    names = list(dict.fromkeys(t["attack"]))
    colors = ps.colors(names)
    width = 0.8 / len(names)
    fig, axes = ps.subplots(2, 1, width=max(6.0, 1.1 * len(settings) * max(1, len(names) / 2) + 2),
                            height=3.2, layout="constrained", sharex=True)
    for ax, col, label, chance in ((axes[0][0], "auc", "AUC (oracle best step)", 0.5),
                                   (axes[1][0], "tpr_at_lowest_fpr", "TPR at lowest resolvable FPR", None)):
        for j, name in enumerate(names):
            d = settings.merge(t[t["attack"] == name], on=keys, how="left")
            xs = np.arange(len(settings)) + (j - (len(names) - 1) / 2) * width
            ax.bar(xs, d[col].fillna(0), width=width * 0.95, color=colors[name], label=name)
            for xv, (_, r) in zip(xs, d.iterrows(), strict=True):
                if pd.isna(r[col]):
                    ax.text(xv, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
                    continue
                tag = "" if pd.isna(r["best_step"]) else f"*t={int(r['best_step'])}"
                if col == "tpr_at_lowest_fpr":
                    tag = f"@{ps.percent(r['lowest_fpr'])}"
                ax.text(xv, r[col] + 0.01, tag, ha="center", va="bottom", fontsize=7, rotation=90)
        if chance is not None:
            ax.axhline(chance, color="0.5", linestyle=":", linewidth=1)
        ax.set_ylim(0, 1.25)
        ax.set_ylabel(label)
    eps = ["∞" if np.isinf(e) else f"{e:g}" for e in settings["epsilon"]]
    labels = [f"{f}\nn={n} ε={e}" for f, n, e in zip(settings["family"], settings["train_size"], eps, strict=True)]
    axes[1][0].set_xticks(np.arange(len(settings)), labels)
    axes[0][0].legend(loc="upper right", fontsize=8, ncol=min(len(names), 4))
    fig.suptitle("Attack comparison (means over seeds; *t = best step, @ = FPR the TPR is read at)", fontsize=11)
    return ps.save(fig, out_dir, "attack_comparison")


V2_FIGURES = {  # name: (function, caption), appended to analysis.figures.FIGURES
    "epsilon_audit": (
        epsilon_audit,
        "Claimed ε (spent) against the empirical ε lower bound per target: Clopper–Pearson (judged) and GDP "
        "(valid only for Gaussian-like mechanisms), at the calibrated step, threshold from the calibration half.",
    ),
    "attack_comparison": (
        attack_comparison,
        "Attack comparison: AUC at the oracle best step (*t) and TPR at the lowest FPR the non-members resolve.",
    ),
}
