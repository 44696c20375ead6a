"""What a sweep prints when it ends: per target and attack the best step (oracle, and calibrated with schema
v2), ε spent against its empirical lower bound (v2), then the paper's findings."""

from __future__ import annotations

import math

import pandas as pd

from analysis.calibrated import audit_table, fmt_eps
from analysis.findings import check, format_findings
from analysis.loader import Results, load
from analysis.report import build_report
from mia_ray.steps import best_rows


def _rate(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:.3f}"


def _calibrated_by_trial(results: Results) -> dict:
    """(trial_id, attack) -> (calibrated step, test AUC, test TPR@1%FPR, test TPR@10%FPR); empty for v1."""
    cal = getattr(results, "calibrated", None)
    if cal is None or cal.empty:
        return {}
    out = {}
    for (trial, attack), g in cal.groupby(["trial_id", "attack"], sort=False):
        tpr = dict(zip(g["oracle_metric"], g["test_tpr"], strict=True))
        out[(trial, attack)] = (g["chosen_step"].iloc[0], g["test_auc"].iloc[0], tpr.get("tpr_at_1pct_fpr"),
                                tpr.get("tpr_at_10pct_fpr"))
    return out


def trial_table(results: Results) -> str:
    """Per target and attack: oracle best step, AUC, TPR@1%FPR and TPR@10%FPR; with schema v2 beside them the
    calibrated step, test-half AUC and test TPRs at 1% and 10% target FPR (plain text)."""
    m = best_rows(results.metrics, ["trial_id", "attack"])
    m = m.sort_values(["family", "train_size", "epsilon", "seed", "attack"], kind="stable")
    cal = _calibrated_by_trial(results)
    head = f"{'target':<34} {'attack':<11} {'best step':>9} {'AUC':>6} {'TPR@1%FPR':>9} {'TPR@10%FPR':>10}"
    if cal:
        head += f" | {'cal.step':>8} {'testAUC':>7} {'TPR@1%':>6} {'TPR@10%':>7}"
    out = [head, "-" * len(head)]
    for r in m.itertuples():
        step = "-" if pd.isna(r.step) else str(int(r.step))
        tpr1 = "n/a" if math.isnan(r.tpr_at_1pct_fpr) else f"{r.tpr_at_1pct_fpr:.3f}"
        label = r.trial_id.rsplit("-", 1)[0]
        line = f"{label:<34} {r.attack:<11} {step:>9} {r.auc:>6.3f} {tpr1:>9} {r.tpr_at_10pct_fpr:>10.3f}"
        if cal:
            c_step, c_auc, c1, c10 = cal.get((r.trial_id, r.attack), (None, None, None, None))
            c_step = "-" if c_step is None or pd.isna(c_step) else str(int(c_step))
            line += f" | {c_step:>8} {_rate(c_auc):>7} {_rate(c1):>6} {_rate(c10):>7}"
        out.append(line)
    if cal:
        out.append("(left: oracle, step and ROC on the same samples; right: calibrated, chosen on the calibration "
                   "half, counted on the test half)")
    return "\n".join(out)


def audit_lines(results: Results) -> str:
    """Per target: ε spent against the largest empirical ε lower bound over its attacks (Clopper–Pearson,
    judged; GDP beside it); empty for v1 results."""
    t = audit_table(results)
    if t.empty:
        return ""
    keys = [c for c in ("dataset", "family", "train_size", "epsilon", "seed") if c in t]
    best = t.sort_values("epsilon_lb_cp", ascending=False, kind="stable").drop_duplicates(keys)
    best = best.sort_values(keys, kind="stable")
    out = ["privacy audit (ε spent vs empirical ε lower bound, 95%, calibrated step; best attack per target):"]
    for r in best.itertuples():
        flag = "  FAILED DP CLAIM" if r.failed_claim else ""
        out.append(f"  {r.family} n={r.train_size} ε={fmt_eps(r.epsilon)} seed {r.seed}: ε spent "
                   f"{fmt_eps(r.epsilon_spent)}, ε_LB {fmt_eps(r.epsilon_lb_cp)} (Clopper–Pearson, {r.attack}), "
                   f"GDP {fmt_eps(r.epsilon_lb_gdp)}{flag}")
    return "\n".join(out)


def finish(results_dir: str, report: bool = True) -> tuple[str, str | None]:
    """The end of a sweep: (text to print: per-target table and findings, path of report.html or None)."""
    results = load(results_dir)
    audit = audit_lines(results)
    text = f"{trial_table(results)}\n\n" + (f"{audit}\n\n" if audit else "") + format_findings(*check(results))
    return text, build_report(results)[0] if report else None
