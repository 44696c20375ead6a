"""Calibrated beside oracle figures, the privacy audit (ε spent against its empirical lower bound) and the
attack comparison, as DataFrames (schema v2 tables ``calibrated/`` and ``audit/``; empty for v1 results).

Oracle figures (``metrics/``) choose the step and read the ROC on the samples whose labels they use;
calibrated ones choose the step and thresholds on the calibration half and count on the test half
(docs/audit.md).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.loader import Results
from analysis.tables import HEADERS, attacks, setting_columns, sort_settings
from mia_ray.metrics import FPR_TARGETS
from mia_ray.steps import AUC_TIE, best_rows

TRIAL_KEYS = ["family", "train_size", "epsilon", "seed"]
SHOWN_FPRS = {"tpr_at_1pct_fpr": "1pct", "tpr_at_10pct_fpr": "10pct"}  # oracle column -> suffix
V2_HEADERS = {
    "oracle_step": "oracle best step",
    "oracle_auc": "oracle AUC",
    "oracle_tpr_at_1pct_fpr": "oracle TPR@1%FPR",
    "oracle_tpr_at_10pct_fpr": "oracle TPR@10%FPR",
    "chosen_step": "calibrated step",
    "calibrated_step": "calibrated step",
    "calibration_auc": "calibration AUC",
    "test_auc_ci": "test AUC (95% CI)",
    "test_tpr_10pct": "test TPR@10%FPR (95% CI)",
    "test_fpr_10pct": "realized FPR, target 10%",
    "test_tpr_1pct": "test TPR@1%FPR (95% CI)",
    "test_fpr_1pct": "realized FPR, target 1%",
    "epsilon_lb_cp": "ε LB (Clopper–Pearson)",
    "epsilon_lb_gdp": "ε LB (GDP)",
    "failed_claim": "failed DP claim",
    "lowest_fpr": "lowest FPR",
    "tpr_at_lowest_fpr": "TPR@lowest FPR",
    "calibrated_test_auc": "calibrated test AUC",
    "calibrated_fpr_target": "calibrated target FPR",
    "calibrated_test_tpr": "calibrated test TPR",
}
HEADERS.update(V2_HEADERS)  # the report's column headings (analysis.tables.format_table) for these tables


def _frame(results, name: str) -> pd.DataFrame:
    frame = getattr(results, name, None)
    return frame if frame is not None else pd.DataFrame()


def _oracle_best(results: Results) -> pd.DataFrame:
    """Per (trial, attack): the oracle best step (highest AUC of that trial) and its metrics."""
    best = best_rows(results.metrics, ["trial_id", "attack"])
    cols = ["trial_id", "attack", "step", "auc", *SHOWN_FPRS]
    return best[cols].rename(columns={"step": "oracle_step", "auc": "oracle_auc",
                                      **{c: f"oracle_{c}" for c in SHOWN_FPRS}})


def _with_ci(v, lo, hi) -> str:
    return "n/a" if pd.isna(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else f"{v:.3f}"


def calibrated_table(results: Results) -> pd.DataFrame:
    """Per trial and attack: oracle best step, AUC and TPRs beside the calibrated chosen step, test AUC
    (95% bootstrap CI) and test TPR at 10% and 1% target FPR with the realized test FPR (Clopper–Pearson 95%
    CIs, as "value [low, high]" strings; the raw numbers are in ``results.calibrated``)."""
    cal = _frame(results, "calibrated")
    if cal.empty:
        return pd.DataFrame()
    first = cal.drop_duplicates(["trial_id", "attack"])
    out = first[["trial_id", *TRIAL_KEYS, "attack", "chosen_step", "calibration_auc"]].copy()
    out["chosen_step"] = out["chosen_step"].astype("Int64")  # null for stepless attacks; printed "999", not "999.0"
    out["test_auc_ci"] = [_with_ci(*v) for v in first[["test_auc", "test_auc_ci_low", "test_auc_ci_high"]].values]
    for oracle, tag in reversed(SHOWN_FPRS.items()):
        part = cal[cal["oracle_metric"] == oracle]
        shown = pd.DataFrame({"trial_id": part["trial_id"], "attack": part["attack"]})
        for r in ("tpr", "fpr"):
            cols = [f"test_{r}", f"test_{r}_ci_low", f"test_{r}_ci_high"]
            shown[f"test_{r}_{tag}"] = [_with_ci(*v) for v in part[cols].values]
        out = out.merge(shown, on=["trial_id", "attack"], how="left")
    out = _oracle_best(results).merge(out, on=["trial_id", "attack"], how="right")
    lead = ["trial_id", *TRIAL_KEYS, "attack"]
    out = out[[*lead, *[c for c in out.columns if c not in lead]]]
    return sort_settings(out, [*TRIAL_KEYS, "attack"]).drop(columns="trial_id")


def audit_table(results: Results) -> pd.DataFrame:
    """Per trial and attack: ε spent (the accountant's claim) against the empirical ε lower bounds at the
    calibrated step (Clopper–Pearson, the one DP claims are judged on, and GDP beside it); ``failed_claim``
    when the Clopper–Pearson bound exceeds a finite ε spent."""
    audit = _frame(results, "audit")
    if audit.empty:
        return pd.DataFrame()
    keys = ["trial_id", *TRIAL_KEYS, "attack", "step", "epsilon_spent", "delta"]
    wide = audit.drop_duplicates(["trial_id", "attack"])[keys]
    for method, col in (("clopper_pearson", "epsilon_lb_cp"), ("gdp", "epsilon_lb_gdp")):
        part = audit[audit["method"] == method][["trial_id", "attack", "epsilon_lb"]]
        wide = wide.merge(part.rename(columns={"epsilon_lb": col}), on=["trial_id", "attack"], how="left")
    finite = np.isfinite(wide["epsilon_spent"])
    wide["failed_claim"] = finite & (wide["epsilon_lb_cp"] > wide["epsilon_spent"])
    wide = wide.rename(columns={"step": "calibrated_step"})
    return sort_settings(wide, [*TRIAL_KEYS, "attack"]).drop(columns="trial_id")


def lowest_resolvable_fpr(n_nonmembers: int) -> tuple[str, float] | None:
    """(oracle column, FPR) of the lowest target FPR with at least one allowed false positive, or None."""
    ok = [(c, f) for c, f in FPR_TARGETS.items() if f * n_nonmembers >= 1 - 1e-9]
    return min(ok, key=lambda cf: cf[1]) if ok else None


def attack_comparison_table(results: Results) -> pd.DataFrame:
    """Per attack and setting (means over seeds): oracle best step (marked ``*`` in the report), its AUC, and
    the TPR at the lowest FPR the setting's non-members resolve; beside them the calibrated test AUC and
    test TPR at that FPR when the results have ``calibrated/``."""
    m = results.metrics
    keys = setting_columns(m)
    rows = []
    cal = _frame(results, "calibrated")
    if len(attacks(results)) < 2:
        return pd.DataFrame()  # nothing to compare
    for attack in attacks(results):
        a = m[m["attack"] == attack].copy()
        a["step"] = a["step"].astype("float64")
        per_step = a.groupby([*keys, "step"], dropna=False).agg(
            auc=("auc", "mean"), n_nonmembers=("n_nonmembers", "min"), seeds=("trial_id", "nunique"),
            **{c: (c, "mean") for c in FPR_TARGETS}).reset_index()
        for _, g in per_step.groupby(keys, sort=False):
            auc = g["auc"].fillna(-np.inf)
            best = g.loc[(auc >= auc.max() - AUC_TIE).idxmax()]  # ties (float noise): the first, smallest step
            low = lowest_resolvable_fpr(int(best["n_nonmembers"]))
            row = {**{k: best[k] for k in keys}, "attack": attack,
                   "best_step": None if pd.isna(best["step"]) else int(best["step"]), "auc": best["auc"],
                   "lowest_fpr": low[1] if low else np.nan, "tpr_at_lowest_fpr": best[low[0]] if low else np.nan,
                   "seeds": int(best["seeds"])}
            if not cal.empty:
                mask = (cal["attack"] == attack) & np.logical_and.reduce([cal[k] == best[k] for k in keys])
                c = cal[mask]
                row["calibrated_test_auc"] = c.drop_duplicates("trial_id")["test_auc"].mean() if len(c) else np.nan
                if len(c):
                    resolvable = c.dropna(subset=["test_tpr"])
                    f = resolvable["fpr_target"].min() if len(resolvable) else np.nan
                    row["calibrated_fpr_target"] = f
                    row["calibrated_test_tpr"] = resolvable[resolvable["fpr_target"] == f]["test_tpr"].mean()
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["best_step"] = out["best_step"].astype("Int64")
    return sort_settings(out, [*keys, "attack"])


def dp_claims(results: Results) -> pd.DataFrame:
    """The audit rows of DP targets (finite ε spent), Clopper–Pearson bound only, largest bound per target."""
    t = audit_table(results)
    if t.empty:
        return t
    t = t[np.isfinite(t["epsilon_spent"])]
    return t.sort_values("epsilon_lb_cp", ascending=False, kind="stable").drop_duplicates(
        [c for c in (*TRIAL_KEYS, "dataset") if c in t])


def fmt_eps(e: float) -> str:
    return "∞" if math.isinf(e) else ("n/a" if pd.isna(e) else f"{e:.3g}")


V2_TABLES = {  # name -> (function, title); shown when the results have the data
    "calibrated": (calibrated_table, "Calibrated beside oracle: step and thresholds chosen on the calibration half, "
                   "counted on the test half (per target and attack)"),
    "epsilon_audit": (audit_table, "Privacy audit: ε spent (claimed) against the empirical ε lower bound "
                      "(95%, calibrated step; DP claims are judged on Clopper–Pearson)"),
    "attack_comparison": (attack_comparison_table, "Attack comparison: AUC and TPR at the lowest resolvable FPR "
                          "(oracle best step; calibrated test-half figures beside them)"),
}


def v2_tables(results: Results) -> dict[str, pd.DataFrame]:
    """The non-empty tables of :data:`V2_TABLES` by name."""
    out = {}
    for name, (make, _) in V2_TABLES.items():
        frame = make(results)
        if not frame.empty:
            out[name] = frame
    return out
