"""What a sweep prints when it ends: one row per target (ε spent, its empirical ε lower bound with schema v2,
each attack's AUC at its step: calibrated with v2, oracle with v1), then the paper's findings."""

from __future__ import annotations

import math

import pandas as pd

from analysis.calibrated import audit_table, fmt_eps
from analysis.findings import check, format_findings
from analysis.loader import Results, load
from analysis.report import build_report
from analysis.score_health import nonfinite_warnings
from mia_ray.steps import best_rows


def _cell(auc, step) -> str:
    """``0.882@75`` (AUC at a step), ``0.933`` for a step-free attack, ``-`` when absent."""
    if auc is None or pd.isna(auc):
        return "-"
    return f"{auc:.3f}" if step is None or pd.isna(step) else f"{auc:.3f}@{int(step)}"


def trial_table(results: Results) -> str:
    """One row per target: ε spent, its largest empirical ε lower bound (schema v2), and per attack the AUC at
    its step — the test-half AUC at the step chosen on the calibration half (v2), or the oracle best-step AUC
    (v1 results, which have no calibration half). Plain text; the report has every figure."""
    m = results.metrics
    cal = getattr(results, "calibrated", None)
    calibrated = cal is not None and not cal.empty
    if calibrated:
        cells = cal.drop_duplicates(["trial_id", "attack"]).set_index(["trial_id", "attack"])
        cells = {k: _cell(r.test_auc, r.chosen_step) for k, r in cells.iterrows()}
    else:
        best = best_rows(m, ["trial_id", "attack"])
        cells = {(r.trial_id, r.attack): _cell(r.auc, r.step) for r in best.itertuples()}
    audit = audit_table(results) if calibrated else pd.DataFrame()
    lb = {}
    if not audit.empty:
        t = results.targets.set_index(["family", "train_size", "epsilon", "seed"])["trial_id"]
        for r in audit.itertuples():
            tid = t.get((r.family, r.train_size, r.epsilon, r.seed))
            if tid is not None and not pd.isna(r.epsilon_lb_cp):
                lb[tid] = max(lb.get(tid, 0.0), float(r.epsilon_lb_cp))
    targets = m.drop_duplicates("trial_id").sort_values(["family", "train_size", "epsilon", "seed"], kind="stable")
    names = list(dict.fromkeys(m["attack"]))
    width = max([10, *(len(a) + 1 for a in names)])
    head = f"{'target':<30} {'ε spent':>8}" + (f" {'ε_LB':>6}" if lb else "") + " |"
    head += "".join(f"{a:>{width}}" for a in names)
    out = [head, "-" * len(head)]
    for r in targets.itertuples():
        line = f"{r.trial_id.rsplit('-', 1)[0]:<30} {fmt_eps(r.epsilon_spent):>8}"
        if lb:
            line += f" {fmt_eps(lb.get(r.trial_id, math.nan)):>6}"
        out.append(line + " |" + "".join(f"{cells.get((r.trial_id, a), '-'):>{width}}" for a in names))
    if calibrated:
        out.append("AUC@step: test-half AUC at the step chosen on the calibration half; ε_LB: the largest "
                   "Clopper–Pearson lower bound over the attacks (audit/). Oracle figures: metrics/, report.html")
    else:
        out.append("AUC@step: oracle AUC at the best step (step and ROC on the same samples; no calibration half in "
                   "these results)")
    return "\n".join(out)


def finish(results_dir: str, report: bool = True) -> tuple[str, str | None]:
    """The end of a sweep: (text to print: per-target table, warnings about non-finite scores, findings; path of
    report.html or None)."""
    results = load(results_dir)
    warnings = "".join(f"{w}\n" for w in nonfinite_warnings(results))
    text = f"{trial_table(results)}\n\n{warnings}" + format_findings(*check(results))
    return text, build_report(results)[0] if report else None
