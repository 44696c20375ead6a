"""The paper's summary tables as DataFrames (raw values, for CSV) and as markdown (formatted).

Metrics are averaged over seeds; a "setting" is (family, train_size, epsilon), plus the dataset when a
sweep has several. The best step of a step-wise attack is the step of highest mean AUC.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from analysis.loader import Results
from mia_ray.steps import best_rows, is_stepwise

TPR_COLUMNS = ["tpr_at_10pct_fpr", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "tpr_at_0_01pct_fpr"]
METRIC_COLUMNS = ["auc", "asr", *TPR_COLUMNS]
CI_COLUMNS = ["auc_ci_low", "auc_ci_high"]
HEADERS = {
    "train_size": "train size",
    "epsilon": "ε",
    "epsilon_spent": "ε spent",
    "best_step": "best step",
    "auc": "AUC",
    "auc_ci": "AUC 95% CI",
    "auc_std": "AUC sd (seeds)",
    "asr": "ASR",
    "tpr_at_10pct_fpr": "TPR@10%FPR",
    "tpr_at_1pct_fpr": "TPR@1%FPR",
    "tpr_at_0_1pct_fpr": "TPR@0.1%FPR",
    "tpr_at_0_01pct_fpr": "TPR@0.01%FPR",
    "n_nonmembers": "non-members",
    "final_loss": "final loss",
    "delta": "δ",
    "noise_multiplier": "noise multiplier",
    "train_steps": "train steps",
}
_INT_COLUMNS = {"train_size", "best_step", "step", "seeds", "n_nonmembers", "train_steps"}


FAMILY_ORDER = ["ddpm", "smld", "vpsde", "vesde"]  # the paper's order; other families follow by name


def sort_settings(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys``, families in the paper's order, ε ascending with ∞ (no DP) last."""

    def key(col: pd.Series) -> pd.Series:
        if col.name != "family":
            return col
        return col.map(lambda f: str(FAMILY_ORDER.index(f)) if f in FAMILY_ORDER else f"~{f}")

    return frame.sort_values(keys, key=key, kind="stable").reset_index(drop=True)


def setting_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that name a setting: family, train_size, epsilon (and dataset when it varies)."""
    cols = ["family", "train_size", "epsilon"]
    return ["dataset", *cols] if frame["dataset"].nunique() > 1 else cols


def per_step(metrics: pd.DataFrame, attack: str = "loss") -> pd.DataFrame:
    """One attack's metrics averaged over seeds: one row per setting and step (step null if step-free)."""
    rows = metrics[metrics["attack"] == attack].copy()
    keys = setting_columns(metrics)
    rows["step"] = rows["step"].astype("float64")  # NaN-safe grouping key for step-free attacks
    grouped = rows.groupby([*keys, "step"], dropna=False, sort=True)
    out = grouped[METRIC_COLUMNS].mean()
    out["auc_std"] = grouped["auc"].std()
    out["seeds"] = grouped["trial_id"].nunique()
    out["n_nonmembers"] = grouped["n_nonmembers"].min()
    single = out["seeds"] == 1  # a bootstrap CI is reported for single-seed settings only
    for col in CI_COLUMNS:
        out[col] = grouped[col].first().where(single)
    out = out.reset_index()
    out["step"] = out["step"].astype("Int64")
    return out


def _drop_empty(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.drop(columns=[c for c in columns if c in frame and frame[c].isna().all()])


def _order(frame: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    rest = [*METRIC_COLUMNS, *CI_COLUMNS, "auc_std", "seeds", "n_nonmembers"]
    cols = [c for c in [*first, *rest] if c in frame]
    out = sort_settings(frame[cols], [c for c in first if c != "best_step"])
    return _drop_empty(out, [*CI_COLUMNS, "auc_std"])


def best_step_table(results: Results, attack: str = "loss") -> pd.DataFrame:
    """Per setting: the step of highest mean AUC for a step-wise attack, and its metrics."""
    steps = per_step(results.metrics, attack)
    steps = steps[steps["step"].notna() & steps["auc"].notna()]
    keys = setting_columns(results.metrics)
    if steps.empty:
        return pd.DataFrame(columns=[*keys, "best_step", *METRIC_COLUMNS])
    best = best_rows(steps, keys).rename(columns={"step": "best_step"})
    return _order(best, [*keys, "best_step"])


def step_free_table(results: Results, attack: str = "likelihood") -> pd.DataFrame:
    """Per setting: the metrics of a step-free attack (the likelihood attack)."""
    rows = per_step(results.metrics, attack)
    keys = setting_columns(results.metrics)
    return _order(rows[rows["step"].isna()], keys)


def dp_table(results: Results) -> pd.DataFrame:
    """Per setting: ε requested and spent, δ, final training loss, and each attack's AUC (best step)."""
    keys = setting_columns(results.metrics)
    targets = results.targets
    if targets.empty:  # fall back on what metrics/ records
        targets = results.metrics.drop_duplicates("trial_id").assign(final_loss=np.nan, delta=np.nan)
    grouped = targets.groupby(keys)
    out = grouped[["epsilon_spent", "final_loss"]].mean()
    out["delta"] = grouped["delta"].first()
    if "noise_multiplier" in targets:
        out["noise_multiplier"] = grouped["noise_multiplier"].mean()
    out = out.reset_index()
    for attack in attacks(results):
        is_stepwise = attack_is_stepwise(results, attack)
        table = best_step_table(results, attack) if is_stepwise else step_free_table(results, attack)
        cols = (["best_step"] if is_stepwise else []) + ["auc", "tpr_at_1pct_fpr"]
        part = table[[*keys, *cols]].rename(columns={c: f"{attack}_{c}" for c in cols})
        out = out.merge(part, on=keys, how="outer")
    out = _drop_empty(out, ["delta", "noise_multiplier", "final_loss"])
    return sort_settings(out, keys)


def attacks(results: Results) -> list[str]:
    """Attack names present in ``metrics/``: loss first, likelihood second, others alphabetically."""
    rank = {"loss": 0, "likelihood": 1}
    return sorted(results.metrics["attack"].dropna().unique(), key=lambda a: (rank.get(a, 2), a))


def attack_is_stepwise(results: Results, attack: str) -> bool:
    """True when the attack's metrics have a step (``mia_ray.steps.is_stepwise``)."""
    return is_stepwise(results.metrics.loc[results.metrics["attack"] == attack, "step"])


def all_tables(results: Results) -> dict[str, pd.DataFrame]:
    """Every summary table by name: ``<attack>_best_step`` or ``<attack>``, then ``dp``."""
    out = {}
    for attack in attacks(results):
        if attack_is_stepwise(results, attack):
            out[f"{attack}_best_step"] = best_step_table(results, attack)
        else:
            out[attack] = step_free_table(results, attack)
    out["dp"] = dp_table(results)
    return out


def _base(col: str) -> str:
    """The metric a column holds, also for attack-prefixed columns of the DP table (``loss_auc``)."""
    for name in (*METRIC_COLUMNS, *CI_COLUMNS, "auc_std", "best_step"):
        if col == name or col.endswith("_" + name):
            return name
    return col


def _header(col: str) -> str:
    base = _base(col)
    if col == base or col in HEADERS:
        return HEADERS.get(col, col)
    return f"{col[: -len(base) - 1]} {HEADERS.get(base, base)}"


def _cell(col: str, value) -> str:
    if isinstance(value, str):
        return value
    if pd.isna(value):
        return "n/a"
    if isinstance(value, (float, np.floating)) and math.isinf(value):
        return "∞ (no DP)" if col == "epsilon" else "∞"
    base = _base(col)
    if base in _INT_COLUMNS:
        return str(int(value))
    if base in (*METRIC_COLUMNS, *CI_COLUMNS, "auc_std"):
        return f"{value:.3f}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}" if col in ("epsilon", "epsilon_spent", "delta") else f"{value:.4g}"
    return str(value)


def _merge_ci(frame: pd.DataFrame) -> pd.DataFrame:
    if not set(CI_COLUMNS) <= set(frame.columns):
        return frame
    frame = frame.copy()
    low, high = frame.pop("auc_ci_low"), frame.pop("auc_ci_high")
    ci = [f"[{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else "n/a" for lo, hi in zip(low, high, strict=True)]
    frame.insert(frame.columns.get_loc("auc") + 1, "auc_ci", ci)
    return frame


def format_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings for display: ∞ for no DP, n/a for undefined (NaN) metrics, 3 decimals for rates."""
    frame = _merge_ci(frame)
    shown = {col: [_cell(col, v) for v in frame[col]] for col in frame.columns}
    return pd.DataFrame(shown, columns=frame.columns).rename(columns=_header)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table, numbers right-aligned (no ``tabulate`` needed)."""
    merged = _merge_ci(frame)
    right = [pd.api.types.is_numeric_dtype(merged[c]) for c in merged.columns]
    shown = format_table(frame)
    header = [str(c).replace("|", "\\|") for c in shown.columns]
    rows = [[str(c).replace("|", "\\|") for c in row] for row in shown.itertuples(index=False)]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        cells = (v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True))
        return "| " + " | ".join(cells) + " |"

    rule = "|".join("-" * (w + 1) + (":" if r else "-") for w, r in zip(widths, right, strict=True))
    return "\n".join([line(header), f"|{rule}|", *(line(r) for r in rows)])


def write_csvs(tables: dict[str, pd.DataFrame], out_dir: str) -> list[str]:
    """Each table as ``<out_dir>/<name>.csv`` (raw values: inf is no DP, empty is undefined)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, frame in tables.items():
        path = os.path.join(out_dir, f"{name}.csv")
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths
