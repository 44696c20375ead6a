"""What a sweep prints when it ends: per target and attack the best step, then the paper's findings."""

from __future__ import annotations

import math

import pandas as pd

from analysis.findings import check, format_findings
from analysis.loader import Results, load
from analysis.report import build_report
from mia_ray.steps import best_rows


def trial_table(results: Results) -> str:
    """Per target and attack: best step, AUC, TPR@1%FPR and TPR@10%FPR (plain text)."""
    m = best_rows(results.metrics, ["trial_id", "attack"])
    m = m.sort_values(["family", "train_size", "epsilon", "seed", "attack"], kind="stable")
    head = f"{'target':<34} {'attack':<11} {'best step':>9} {'AUC':>6} {'TPR@1%FPR':>9} {'TPR@10%FPR':>10}"
    out = [head, "-" * len(head)]
    for r in m.itertuples():
        step = "-" if pd.isna(r.step) else str(int(r.step))
        tpr1 = "n/a" if math.isnan(r.tpr_at_1pct_fpr) else f"{r.tpr_at_1pct_fpr:.3f}"
        label = r.trial_id.rsplit("-", 1)[0]
        out.append(f"{label:<34} {r.attack:<11} {step:>9} {r.auc:>6.3f} {tpr1:>9} {r.tpr_at_10pct_fpr:>10.3f}")
    return "\n".join(out)


def finish(results_dir: str, report: bool = True) -> tuple[str, str | None]:
    """The end of a sweep: (text to print: per-target table and findings, path of report.html or None)."""
    results = load(results_dir)
    text = f"{trial_table(results)}\n\n{format_findings(*check(results))}"
    return text, build_report(results)[0] if report else None
