"""Tables a results directory lacks although the sweep writes them with every trial: the report still shows what
``metrics/`` holds, but the parts those tables feed are left out, and the user must be told which and why."""

from __future__ import annotations

from analysis.loader import Results

DROPPED = {  # table -> what the report and findings leave out without it
    "scores": "the ROC curves and the check for non-finite scores",
    "targets": "the training columns of the DP table (final loss, δ, noise multiplier) and the privacy-utility "
               "figure",
}


def missing_table_warnings(results: Results) -> list[str]:
    """One line per table of ``DROPPED`` that has no Parquet file (a folder copied without its large ``scores/``, a
    table deleted by hand), or that has no row for some trials of ``metrics/``. Not an error: the metrics alone
    give the tables and findings."""
    out = []
    trials = set(results.metrics["trial_id"])
    for table, dropped in DROPPED.items():
        have = results.has_table(table)
        if not have:
            out.append(f"warning: {results.root}/{table}/ has no Parquet files; the report leaves out {dropped} "
                       f"(python -m mia_ray.sweep writes {table}/ with every trial)")
        elif table == "targets":  # small: every trial's row can be checked
            lacking = sorted(trials - set(results.targets["trial_id"]))
            if lacking:
                out.append(f"warning: {results.root}/targets/ has no row for {len(lacking)} of {len(trials)} trial(s) "
                           f"(e.g. {lacking[0]}); the report leaves out {dropped} for them")
    return out
