"""The paper's figures as PNG files. Each function takes (results, out_dir) and returns the PNG's path,
or None when the sweep lacks the data the figure needs (no likelihood rows, a single ε, ...).

Figures of one setting use the reference privacy level: no DP (ε = ∞) when the sweep has it, otherwise
its largest ε. ROC curves are recomputed from ``scores/`` for the lowest seed of each setting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from analysis import plot_style as ps
from analysis.calibrated_figures import V2_FIGURES
from analysis.loader import Results, read_scores
from analysis.tables import (
    attack_is_stepwise,
    best_step_table,
    dp_table,
    per_step,
    setting_columns,
    step_free_table,
)
from mia_ray.metrics import auc, roc_curve


def reference_epsilon(epsilons) -> float:
    values = pd.Series(epsilons, dtype="float64").dropna()
    return float("inf") if np.isinf(values).any() else float(values.max())


def _eps_label(eps: float) -> str:
    return "no DP (ε = ∞)" if np.isinf(eps) else f"ε = {eps:g}"


def _series(frame: pd.DataFrame) -> pd.Series:
    """The label of a model family (with its dataset when the sweep has several)."""
    if "dataset" in frame and frame["dataset"].nunique() > 1:
        return frame["family"] + " (" + frame["dataset"] + ")"
    return frame["family"]


def _series_order(frame: pd.DataFrame) -> list[str]:
    labels = _series(frame).unique()
    rank = {f: i for i, f in enumerate(ps.ordered_families(frame["family"].unique()))}
    return sorted(labels, key=lambda s: (rank.get(s.split(" (")[0], 99), s))


def _lowest_seed_trials(metrics: pd.DataFrame) -> pd.DataFrame:
    """One trial per (series, train_size): the lowest seed, ties broken by trial id."""
    trials = metrics.assign(series=_series(metrics)).sort_values(["seed", "trial_id"])
    return trials.drop_duplicates(["series", "train_size"])


def _best_loss_steps(results: Results, eps: float) -> dict[tuple[str, int], int]:
    """The loss attack's best step (highest AUC averaged over seeds) of each (series, train_size) at ε."""
    table = best_step_table(results, "loss")
    table = table[table["epsilon"] == eps]
    pairs = zip(_series(table), table["train_size"], table["best_step"], strict=True)
    return {(series, int(size)): int(step) for series, size, step in pairs}


def _seed_note(metrics: pd.DataFrame) -> str:
    several = metrics.groupby(["family", "train_size", "epsilon"])["seed"].nunique().max() > 1
    return "; lowest seed of each setting" if several else ""


def tpr_vs_step(results: Results, out_dir: str) -> str | None:
    """TPR at 10%, 1% and 0.1% FPR of the loss attack against the diffusion step, per family (main figure)."""
    steps = per_step(results.metrics, "loss")
    steps = steps[steps["step"].notna()]
    if steps.empty:
        return None
    eps = reference_epsilon(steps["epsilon"])
    steps = steps[steps["epsilon"] == eps].assign(series=lambda d: _series(d))
    columns, sizes = _series_order(steps), sorted(steps["train_size"].unique())
    fig, axes = ps.subplots(len(sizes), len(columns), sharex=True, sharey=True, layout="constrained")
    handles: dict[str, Line2D] = {}
    for r, size in enumerate(sizes):
        for c, series in enumerate(columns):
            ax = axes[r][c]
            panel = steps[(steps["series"] == series) & (steps["train_size"] == size)].sort_values("step")
            ax.set_title(f"{series}, {size} members")
            marker = "o" if len(panel) <= 30 else None
            for col, fpr, color in ps.FPR_LEVELS:
                if panel[col].isna().all():
                    n_needed = round(1 / fpr)
                    handles.setdefault(
                        f"TPR @ {ps.percent(fpr)} FPR: n/a (< {n_needed} non-members)",
                        Line2D([], [], color=color, alpha=0.35),
                    )
                    continue
                ax.axhline(fpr, color=color, linestyle=":", linewidth=1)
                (line,) = ax.plot(panel["step"], panel[col], color=color, marker=marker, markersize=4)
                handles[f"TPR @ {ps.percent(fpr)} FPR"] = line
            ax.set_ylim(0, 1.02)
    for ax in axes[-1]:
        ax.set_xlabel("diffusion step t (noise increases →)")
    for row in axes:
        row[0].set_ylabel("true positive rate")
    handles["chance (TPR = FPR), dotted"] = Line2D([], [], color="0.4", linestyle=":")
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=2)
    fig.suptitle(f"Loss attack: TPR at fixed FPR vs diffusion step, {_eps_label(eps)}", fontsize=12)
    return ps.save(fig, out_dir, "tpr_vs_step")


def _roc(scores: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
    """(fpr, tpr, AUC) of one attack's per-sample scores, by ``mia_ray.metrics`` (the metrics/ numbers)."""
    s, m = scores["score"].to_numpy(), scores["is_member"].to_numpy()
    fpr, tpr, _ = roc_curve(s, m)
    return fpr, tpr, auc(s, m)


def _pick_steps(available: list[int], best: int, wanted: list[int] | None, count: int) -> list[int]:
    if wanted:
        return sorted({min(available, key=lambda s, w=w: abs(s - w)) for w in wanted})
    idx = np.unique(np.linspace(0, len(available) - 1, count - 1).round().astype(int))
    return sorted({available[i] for i in idx} | {best})


def roc_loss(results: Results, out_dir: str, steps: list[int] | None = None, count: int = 5) -> str | None:
    """Log-log ROC curves of the loss attack at a few steps (the best one bold), per family and size."""
    m = results.metrics
    m = m[(m["attack"] == "loss") & m["step"].notna()]
    if m.empty:
        return None
    eps = reference_epsilon(m["epsilon"])
    m = m[m["epsilon"] == eps]
    trials = _lowest_seed_trials(m)
    best_steps = _best_loss_steps(results, eps)
    columns, sizes = _series_order(trials), sorted(trials["train_size"].unique())
    fig, axes = ps.subplots(len(sizes), len(columns), width=4.2, height=4.2, layout="constrained")
    drawn = False
    for r, size in enumerate(sizes):
        for c, series in enumerate(columns):
            ax = axes[r][c]
            ax.set_title(f"{series}, {size} members")
            pick = trials[(trials["series"] == series) & (trials["train_size"] == size)]
            if pick.empty:
                ax.set_axis_off()
                continue
            trial = pick["trial_id"].iloc[0]
            rows = m[m["trial_id"] == trial]
            available = sorted(int(s) for s in rows["step"].unique())
            best = best_steps.get((series, int(size)), available[0])
            chosen = _pick_steps(available, best, steps, count)
            scores = read_scores(results, "loss", chosen, trial, ["step", "score", "is_member"])
            ps.roc_axes(ax, int(rows["n_nonmembers"].max()), int(rows["n_members"].max()))
            colors = ps.plt.cm.viridis(np.linspace(0.0, 0.85, len(chosen)))
            for step, color in zip(chosen, colors, strict=True):
                s = scores[scores["step"] == step]
                if s.empty or s["is_member"].all() or not s["is_member"].any():
                    continue
                fpr, tpr, area = _roc(s)
                tag = " (best)" if step == best else ""
                ax.plot(
                    fpr,
                    tpr,
                    color=color,
                    linewidth=2.4 if tag else 1.4,
                    label=f"t = {step}{tag}, AUC {area:.3f}",
                )
                drawn = True
            ax.legend(loc="lower right", fontsize=8)
            ax.set_xlabel("false positive rate" if r == len(sizes) - 1 else "")
            ax.set_ylabel("true positive rate" if c == 0 else "")
    if not drawn:
        ps.plt.close(fig)
        return None
    title = f"Loss attack ROC at selected diffusion steps (log-log), {_eps_label(eps)}{_seed_note(m)}"
    fig.suptitle(title, fontsize=12)
    return ps.save(fig, out_dir, "roc_loss")


def _attack_tables(results: Results) -> list[tuple[str, pd.DataFrame]]:
    """(label, table) of each attack: best step for step-wise attacks, the single row otherwise."""
    out = []
    for attack in sorted(results.metrics["attack"].dropna().unique(), key=lambda a: (a != "loss", a)):
        if attack_is_stepwise(results, attack):
            out.append((f"{attack} (best step)", best_step_table(results, attack)))
        else:
            out.append((attack, step_free_table(results, attack)))
    return out


def _low_fpr_column(frames: list[pd.DataFrame]) -> tuple[str, str, float]:
    """(column, label, FPR): TPR@1%FPR, or TPR@10%FPR when no setting has the 100 non-members 1% needs."""
    if any(f["tpr_at_1pct_fpr"].notna().any() for f in frames if not f.empty):
        return "tpr_at_1pct_fpr", "TPR @ 1% FPR", 0.01
    return "tpr_at_10pct_fpr", "TPR @ 10% FPR", 0.1


def _legend_right(fig, axes) -> None:
    """One legend for the figure, right of the panels, from the first panel's series (all panels share them)."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")


def _fallback_note(ax, fpr: float) -> None:
    if fpr > 0.01:
        ax.text(
            0.02,
            0.98,
            "TPR @ 1% FPR n/a: < 100 non-members",
            transform=ax.transAxes,
            fontsize=8,
            color="0.35",
            va="top",
        )


def _several_seeds(tables: list[tuple[str, pd.DataFrame]]) -> bool:
    return any("auc_std" in t and t["auc_std"].notna().any() for _, t in tables)


def vs_train_size(results: Results, out_dir: str) -> str | None:
    """AUC and TPR at low FPR against the training-set size, per family and attack."""
    if results.metrics["train_size"].nunique() < 2:
        return None
    eps = reference_epsilon(results.metrics["epsilon"])
    tables = [
        (label, t[t["epsilon"] == eps].assign(series=_series(t))) for label, t in _attack_tables(results)
    ]
    low_col, low_label, low_fpr = _low_fpr_column([t for _, t in tables])
    series_colors = ps.colors(_series_order(results.metrics))
    fig, axes = ps.subplots(1, 2, width=4.8, height=4.0, layout="constrained")
    for ax, col, ylabel, chance in (
        (axes[0][0], "auc", "AUC (± sd over seeds)" if _several_seeds(tables) else "AUC", 0.5),
        (axes[0][1], low_col, low_label, low_fpr),
    ):
        for a, (label, table) in enumerate(tables):
            for series, color in series_colors.items():
                d = table[table["series"] == series].sort_values("train_size")
                if d.empty or d[col].isna().all():
                    continue
                err = d["auc_std"].fillna(0.0) if col == "auc" and "auc_std" in d else None
                ax.errorbar(
                    d["train_size"],
                    d[col],
                    yerr=err,
                    color=color,
                    capsize=3,
                    linestyle=ps.LINESTYLES[a % 4],
                    marker=ps.MARKERS[a % 5],
                    label=f"{series}, {label}",
                )
        ax.axhline(chance, color="0.5", linestyle=":", linewidth=1, label="chance")
        sizes = sorted(results.metrics["train_size"].unique())
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlim(sizes[0] / 1.4, sizes[-1] * 1.4)
        ax.set_ylim(0.0 if col != "auc" else min(0.45, ax.get_ylim()[0]), 1.02)
        ax.set_xlabel("training-set size (members)")
        ax.set_ylabel(ylabel)
    _fallback_note(axes[0][1], low_fpr)
    _legend_right(fig, axes)
    fig.suptitle(f"Leakage vs training-set size, {_eps_label(eps)}", fontsize=12)
    return ps.save(fig, out_dir, "vs_train_size")


def _plot_against_epsilon(ax, d: pd.DataFrame, col: str, pos: dict, **style) -> None:
    d = d.dropna(subset=[col])
    x = np.array([pos[v] for v in d["x"]])
    order = np.argsort(x)
    ax.plot(x[order], d[col].to_numpy()[order], **style)


def vs_epsilon(results: Results, out_dir: str) -> str | None:
    """Privacy-utility view: loss-attack AUC, TPR at low FPR and final training loss against ε spent."""
    if results.metrics["epsilon"].nunique() < 2:
        return None
    dp = dp_table(results)
    if "loss_auc" not in dp:
        return None
    spent = dp["epsilon_spent"].where(np.isfinite(dp["epsilon_spent"]) & (dp["epsilon_spent"] > 0))
    dp = dp.assign(series=_series(dp), x=spent.fillna(dp["epsilon"]))
    loss_table = best_step_table(results, "loss")
    low_col, low_label, low_fpr = _low_fpr_column([loss_table])
    keys = [k for k in ("dataset", "family", "train_size", "epsilon") if k in dp and k in loss_table]
    dp = dp.merge(loss_table[[*keys, low_col]].rename(columns={low_col: "low"}), on=keys, how="left")
    panels = [
        ("loss_auc", "AUC (loss attack, best step)", 0.5),
        ("low", f"{low_label} (loss attack)", low_fpr),
    ]
    if "final_loss" in dp and dp["final_loss"].notna().any():
        panels.append(("final_loss", "final training loss (utility)", None))
    pos, _ = ps.epsilon_positions(dp["x"])
    deltas = sorted(dp["delta"].dropna().unique()) if "delta" in dp else []
    xlabel = "ε spent" + (f" (δ = {deltas[0]:g})" if len(deltas) == 1 else "")
    series_colors = ps.colors(_series_order(dp))
    sizes = sorted(dp["train_size"].unique())
    fig, axes = ps.subplots(1, len(panels), width=4.3, height=4.0, layout="constrained")
    for ax, (col, ylabel, chance) in zip(axes[0], panels, strict=True):
        for series, color in series_colors.items():
            for i, size in enumerate(sizes):
                d = dp[(dp["series"] == series) & (dp["train_size"] == size)]
                _plot_against_epsilon(
                    ax,
                    d,
                    col,
                    pos,
                    color=color,
                    linestyle=ps.LINESTYLES[i % 4],
                    marker=ps.MARKERS[i % 5],
                    label=f"{series}, {size} members",
                )
        if chance is not None:
            ax.axhline(chance, color="0.5", linestyle=":", linewidth=1, label="chance")
        ps.epsilon_axis(ax, dp["x"], xlabel)
        ax.set_ylabel(ylabel)
        if col != "final_loss":
            ax.set_ylim(0.0 if col == "low" else min(0.45, ax.get_ylim()[0]), 1.02)
    _fallback_note(axes[0][1], low_fpr)
    _legend_right(fig, axes)
    fig.suptitle("Privacy vs utility: leakage and training loss against the privacy budget ε", fontsize=12)
    return ps.save(fig, out_dir, "vs_epsilon")


def roc_likelihood(results: Results, out_dir: str) -> str | None:
    """Log-log ROC of the likelihood attack per family (the loss attack at its best step dashed)."""
    m = results.metrics
    lik = m[m["attack"] == "likelihood"]
    if lik.empty:
        return None
    eps = reference_epsilon(lik["epsilon"])
    trials = _lowest_seed_trials(lik[lik["epsilon"] == eps])
    best_steps = _best_loss_steps(results, eps) if (m["attack"] == "loss").any() else {}
    sizes = sorted(trials["train_size"].unique())
    series_colors = ps.colors(_series_order(trials))
    fig, axes = ps.subplots(1, len(sizes), width=5.0, height=5.0, layout="constrained")
    drawn = False
    for ax, size in zip(axes[0], sizes, strict=True):
        here = trials[trials["train_size"] == size]
        ps.roc_axes(ax, int(here["n_nonmembers"].max()), int(here["n_members"].max()))
        for series, color in series_colors.items():
            pick = here[here["series"] == series]
            if pick.empty:
                continue
            trial = pick["trial_id"].iloc[0]
            s = read_scores(results, "likelihood", trial_id=trial, columns=["score", "is_member"])
            if s.empty:
                continue
            fpr, tpr, area = _roc(s)
            ax.plot(fpr, tpr, color=color, linewidth=2, label=f"{series} likelihood, AUC {area:.3f}")
            drawn = True
            best = best_steps.get((series, int(size)))
            if best is not None:
                s = read_scores(results, "loss", best, trial, ["score", "is_member"])
                if not s.empty:
                    fpr, tpr, area = _roc(s)
                    ax.plot(
                        fpr,
                        tpr,
                        color=color,
                        linewidth=1.2,
                        linestyle="--",
                        label=f"{series} loss t = {best}, AUC {area:.3f}",
                    )
        ax.set_title(f"{size} members")
        ax.legend(loc="lower right", fontsize=8)
    if not drawn:
        ps.plt.close(fig)
        return None
    fig.suptitle(f"Likelihood attack ROC (log-log), {_eps_label(eps)}{_seed_note(lik)}", fontsize=12)
    return ps.save(fig, out_dir, "roc_likelihood")


# --- issue 13 (utilaudit): privacy against utility ---------------------------------------------------


def _optional_table(results: Results, table: str) -> pd.DataFrame:
    """A results table that older or smaller sweeps may lack (``audit/``, ``canary_audit/``); empty if absent."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    infos = results.fs.get_file_info(pafs.FileSelector(f"{results.base}/{table}", allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                   and not i.base_name.startswith((".", "_")))
    if not files:
        return pd.DataFrame()
    return pads.dataset(files, filesystem=results.fs, format="parquet").to_table().to_pandas()


def epsilon_lower_bounds(results: Results) -> pd.DataFrame:
    """Per trial: the largest empirical epsilon lower bound found, from ``audit/`` (Clopper-Pearson rows) and
    ``canary_audit/`` (the Bonferroni-corrected bound over steps); columns trial_id, epsilon_lb. Empty if none."""
    parts = []
    audit = _optional_table(results, "audit")
    if not audit.empty and {"trial_id", "epsilon_lb"} <= set(audit):
        if "method" in audit:
            audit = audit[audit["method"] == "clopper_pearson"]
        parts.append(audit[["trial_id", "epsilon_lb"]])
    canary = _optional_table(results, "canary_audit")
    if not canary.empty:
        bound = canary[["trial_id", "epsilon_lb_bonferroni"]]
        parts.append(bound.rename(columns={"epsilon_lb_bonferroni": "epsilon_lb"}))
    if not parts:
        return pd.DataFrame(columns=["trial_id", "epsilon_lb"])
    return pd.concat(parts).groupby("trial_id", as_index=False)["epsilon_lb"].max()


def privacy_utility_table(results: Results) -> pd.DataFrame:
    """Per setting (family, train size, ε; means over seeds): utility FD and KID, the best AUC and TPR at low FPR
    over every attack and step, and the largest empirical ε lower bound when an audit table exists."""
    t = results.targets
    if "utility_fd" not in t or t["utility_fd"].isna().all():
        return pd.DataFrame()
    m = results.metrics
    low_col = "tpr_at_1pct_fpr" if m["tpr_at_1pct_fpr"].notna().any() else "tpr_at_10pct_fpr"
    leak = m.groupby("trial_id").agg(best_auc=("auc", "max"), best_tpr=(low_col, "max")).reset_index()
    keys = setting_columns(t)
    per_trial = t[[*keys, "trial_id", "epsilon_spent", "utility_fd", "utility_kid"]].merge(leak, on="trial_id")
    per_trial = per_trial.merge(epsilon_lower_bounds(results), on="trial_id", how="left")
    out = per_trial.groupby(keys, as_index=False)[
        ["epsilon_spent", "utility_fd", "utility_kid", "best_auc", "best_tpr", "epsilon_lb"]
    ].mean()
    out.attrs["low_fpr_column"] = low_col
    return out


def privacy_utility(results: Results, out_dir: str) -> str | None:
    """Leakage (best AUC, best TPR at low FPR, ε lower bound when audited) against the utility FD, one line per
    family x train size through its ε values (labelled); lower FD = better samples."""
    table = privacy_utility_table(results)
    if table.empty or table["utility_fd"].isna().all():
        return None
    panels = [("best_auc", "best AUC (any attack, step)", 0.5)]
    low = "TPR @ 1% FPR" if table.attrs.get("low_fpr_column") == "tpr_at_1pct_fpr" else "TPR @ 10% FPR"
    panels.append(("best_tpr", f"best {low}", None))
    if table["epsilon_lb"].notna().any():
        panels.append(("epsilon_lb", "empirical ε lower bound (largest)", None))
    table = table.assign(series=_series(table))
    series_colors = ps.colors(_series_order(table))
    sizes = sorted(table["train_size"].unique())
    fig, axes = ps.subplots(1, len(panels), width=4.3, height=4.0, layout="constrained")
    for ax, (col, ylabel, chance) in zip(axes[0], panels, strict=True):
        for series, color in series_colors.items():
            for i, size in enumerate(sizes):
                d = table[(table["series"] == series) & (table["train_size"] == size)].dropna(subset=[col])
                if d.empty:
                    continue
                d = d.sort_values("epsilon")
                ax.plot(d["utility_fd"], d[col], color=color, linestyle=ps.LINESTYLES[i % 4],
                        marker=ps.MARKERS[i % 5], label=f"{series}, {size} members")
                for x, y, e in zip(d["utility_fd"], d[col], d["epsilon"], strict=True):
                    ax.annotate("∞" if np.isinf(e) else f"{e:g}", (x, y), textcoords="offset points",
                                xytext=(4, 3), fontsize=8, color=color)
        if chance is not None:
            ax.axhline(chance, color="0.5", linestyle=":", linewidth=1, label="chance")
        ax.set_xlabel("Fréchet distance of samples (lower = better)")
        ax.set_ylabel(ylabel)
    _legend_right(fig, axes)
    fig.suptitle("Privacy vs utility: leakage against sample quality, points labelled by ε", fontsize=12)
    return ps.save(fig, out_dir, "privacy_utility")


FIGURES = {  # name: (function, caption)
    "tpr_vs_step": (tpr_vs_step, "TPR at fixed FPR of the loss attack against the diffusion step."),
    "roc_loss": (
        roc_loss,
        "Log-log ROC curves of the loss attack at selected steps, recomputed from scores.",
    ),
    "vs_train_size": (vs_train_size, "AUC and TPR at low FPR against the training-set size."),
    "vs_epsilon": (vs_epsilon, "Privacy-utility view: leakage and final training loss against ε spent."),
    "roc_likelihood": (
        roc_likelihood,
        "Log-log ROC of the likelihood attack (loss attack at its best step dashed).",
    ),
    "privacy_utility": (
        privacy_utility,
        "Privacy vs utility: best AUC, TPR at low FPR and the empirical ε lower bound (when audited) against the "
        "Fréchet distance of each target's samples to held-out images (pool-trained features), labelled by ε.",
    ),
}
FIGURES.update(V2_FIGURES)  # v2calib: ε audit and attack comparison (analysis.calibrated_figures)


def write_figures(results: Results, out_dir: str) -> dict[str, str]:
    """Every figure the data allows, as ``{name: png path}``."""
    paths = {}
    for name, (make, _) in FIGURES.items():
        path = make(results, out_dir)
        if path is not None:
            paths[name] = path
    return paths
