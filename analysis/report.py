"""One self-contained HTML report per sweep: summary tables, embedded figures and the sweep's config."""

from __future__ import annotations

import base64
import datetime as dt
import html
import os

import numpy as np
import pandas as pd

from analysis.calibrated import V2_TABLES, v2_tables
from analysis.completeness import missing_table_warnings
from analysis.figures import FIGURES, write_figures
from analysis.findings import check
from analysis.loader import AnalysisError, Results, load
from analysis.plot_style import ordered_families
from analysis.score_health import nonfinite_warnings
from analysis.tables import all_tables, attacks, format_table, write_csvs

TABLE_TITLES = {
    "loss_best_step": "Loss attack: the best diffusion step of each setting",
    "likelihood": "Likelihood attack",
    "dp": "Differential privacy: budget spent, utility and leakage",
    **{name: title for name, (_, title) in V2_TABLES.items()},
}
NOTE = (
    "Members are the positive class. Metrics are means over seeds; the best step has the highest mean AUC. "
    "n/a: a TPR at an FPR below 1/(number of non-members) is undefined. ε = ∞: trained without DP. "
    "Oracle figures choose the step and read the ROC on the samples whose labels they use (biased upward); "
    "calibrated figures (schema v2) choose the step and thresholds on a calibration half and count on the "
    "test half; CIs are 95% (Clopper–Pearson for rates, bootstrap for AUC)."
)
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f4f4f4; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption, .meta, .note { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def table_title(name: str) -> str:
    """The heading of a summary table (by its name in ``tables.all_tables``)."""
    if name in TABLE_TITLES:
        return TABLE_TITLES[name]
    attack = name.removesuffix("_best_step")
    return f"{attack} attack" + (": the best step of each setting" if attack != name else "")


def _summary(results: Results) -> str:
    m = results.metrics
    eps = ", ".join("∞" if np.isinf(e) else f"{e:g}" for e in sorted(m["epsilon"].dropna().unique()))
    parts = [
        f"{m['trial_id'].nunique()} trials",
        "families: " + ", ".join(ordered_families(m["family"].dropna().unique())),
        "training-set sizes: " + ", ".join(str(s) for s in sorted(m["train_size"].dropna().unique())),
        f"ε: {eps}",
        "attacks: " + ", ".join(attacks(results)),
    ]
    return " · ".join(parts)


def _embed(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _findings_html(results: Results) -> list[str]:
    attack, found = check(results)
    if not found:
        return []
    verdict = {True: "holds", False: "does not hold", None: "not tested"}
    out = [f'<h3 id="findings">The paper\'s findings ({html.escape(attack)} attack)</h3>', "<ul>"]
    for f in found:
        items = "".join(f"<li>{html.escape(e)}</li>" for e in f.evidence)
        basis = f' <span class="note">({html.escape(f.basis)})</span>'
        out.append(f"<li><b>{verdict[f.holds]}</b>: {html.escape(f.claim)}{basis}<ul>{items}</ul></li>")
    return [*out, "</ul>"]


def render_html(results: Results, tables: dict, figures: dict[str, str]) -> str:
    """The report as one HTML string (PNG images embedded as data URIs)."""
    name = html.escape(results.sweep_name)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>mia_ray report: {name}</title>',
        f"<style>{CSS}</style></head><body>",
        f"<h1>Membership inference of diffusion models: {name}</h1>",
        f'<p class="meta">{html.escape(results.root)} · {html.escape(_summary(results))} · {stamp}</p>',
        "<h2>Tables</h2>",
        f'<p class="note">{html.escape(NOTE)}</p>',
    ]
    warnings = nonfinite_warnings(results)
    if warnings:
        out.append('<ul id="nonfinite-scores">' + "".join(f"<li><b>{html.escape(w)}</b></li>" for w in warnings)
                   + "</ul>")
    missing = missing_table_warnings(results)
    if missing:
        out.append('<ul id="missing-tables">' + "".join(f"<li><b>{html.escape(w)}</b></li>" for w in missing)
                   + "</ul>")
    out.extend(_findings_html(results))
    out.extend(_canary_html(results))
    for key, frame in tables.items():
        out.append(f'<h3 id="table-{key}">{html.escape(table_title(key))}</h3>')
        out.append(format_table(frame).to_html(index=False, border=0, na_rep="n/a"))
    out.append("<h2>Figures</h2>")
    for key, path in figures.items():
        caption = html.escape(FIGURES[key][1])
        out.append(f'<figure id="figure-{key}"><img src="{_embed(path)}" alt="{key}">')
        out.append(f"<figcaption>{caption} ({html.escape(os.path.basename(path))})</figcaption></figure>")
    out.extend(_grids_html(results))
    out.append("<h2>Sweep configuration (sweep.yaml)</h2>")
    config = results.config_text.strip() or "(no sweep.yaml in the results directory)"
    out.append(f"<pre>{html.escape(config)}</pre></body></html>")
    return "\n".join(out)


def _canary_html(results: Results) -> list[str]:
    """Issue 13: per target, ε spent beside the largest one-run canary lower bound (Bonferroni over steps)."""
    from analysis.figures import _optional_table

    a = _optional_table(results, "canary_audit")
    if a.empty:
        return []
    best = a.sort_values("epsilon_lb_bonferroni", ascending=False, kind="stable").drop_duplicates("trial_id")
    rows = []
    for r in best.sort_values("trial_id").to_dict("records"):
        step = "" if pd.isna(r["step"]) else f" @ {int(r['step'])}"
        flag = " ⚠ above ε spent: DP claim fails" if r["epsilon_lb_bonferroni"] > r["epsilon_spent"] else ""
        rows.append({"trial": r["trial_id"], "ε": r["epsilon"], "ε spent": r["epsilon_spent"],
                     "attack": f"{r['attack']}{step}", "correct / guesses": f"{r['n_correct']} / {r['n_guesses']}",
                     "canaries": r["m"], "ε lower bound": f"{r['epsilon_lb_bonferroni']:.3g}{flag}"})
    note = ("One-run audit (Steinke, Nasr & Jagielski 2023) at α = 0.05, the largest bound over attacks and steps "
            "(each step's bound at α / number of steps). A bound above ε spent means a bug.")
    return ['<h3 id="canary-audit">Canary audit: ε spent against the empirical lower bound</h3>',
            f'<p class="note">{html.escape(note)}</p>',
            pd.DataFrame(rows).to_html(index=False, border=0, na_rep="n/a")]


def _grids_html(results: Results) -> list[str]:
    """Issue 13: each target's DDIM sample grid (``<root>/grids/<trial_id>.png``) with its utility FD."""
    import pyarrow.fs as pafs

    infos = results.fs.get_file_info(pafs.FileSelector(f"{results.base}/grids", allow_not_found=True))
    pngs = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".png")
                  and not i.base_name.startswith("."))
    if not pngs:
        return []
    t = results.targets
    fd = dict(zip(t["trial_id"], t["utility_fd"], strict=True)) if "utility_fd" in t else {}
    out = ['<h2 id="samples">Samples of each target (DDIM, seed 0)</h2>', '<div class="grids">']
    for path in pngs:
        trial = os.path.basename(path)[: -len(".png")]
        with results.fs.open_input_stream(path) as f:
            data = "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")
        note = f" · FD {fd[trial]:.3g}" if trial in fd and np.isfinite(fd[trial]) else ""
        out.append(f'<figure style="display:inline-block;margin:0.5em"><img src="{data}" alt="{html.escape(trial)}">'
                   f"<figcaption>{html.escape(trial)}{note}</figcaption></figure>")
    return [*out, "</div>"]


def default_out_dir(results: Results) -> str:
    """``<results_dir>/report``, or ``./<sweep>_report`` for results on an object store."""
    if "://" in results.root and not results.root.startswith("file://"):
        return os.path.abspath(f"{os.path.basename(results.root)}_report")
    return os.path.join(results.root.removeprefix("file://"), "report")


def build_report(results: Results, out_dir: str | None = None) -> tuple[str, dict]:
    """Write CSV tables, PNG figures and ``report.html`` into ``out_dir``; returns (html path, tables)."""
    out_dir = out_dir or default_out_dir(results)
    try:  # the default out_dir is not checked by the CLI (results.folder_problem); a race may remove a folder
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise AnalysisError(
            f"report folder {out_dir}: cannot create it ({exc.strerror or exc}); allowed: a folder you can write to"
        ) from None
    tables = {**all_tables(results), **v2_tables(results)}
    _check_names_free(out_dir, [*(f"{k}.csv" for k in tables), *(f"{k}.png" for k in FIGURES), "report.html"])
    write_csvs(tables, out_dir)
    figures = write_figures(results, out_dir)
    path = os.path.join(out_dir, "report.html")
    tmp = os.path.join(out_dir, ".report.html.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render_html(results, tables, figures))
    os.replace(tmp, path)  # a reader never sees half a report
    return path, tables


def _check_names_free(out_dir: str, names: list[str]) -> None:
    """A folder where the report writes a file (``dp.csv/``, ``report.html/`` in an --out folder) was an
    IsADirectoryError traceback after the files before it were written: refused before the first."""
    blocked = [n for n in names if os.path.isdir(os.path.join(out_dir, n))]
    if blocked:
        raise AnalysisError(
            f"report folder {out_dir}: {', '.join(blocked)} {'is a folder' if len(blocked) == 1 else 'are folders'}, "
            "where the report writes a file; allowed: a folder without folders named like its files "
            "(<table>.csv, <figure>.png, report.html): remove them or pass another --out"
        )


def write_report(results_dir: str, out_dir: str | None = None) -> str:
    """Analyse ``results_dir`` and write its report (default ``<results_dir>/report/``); returns its path."""
    return build_report(load(results_dir), out_dir)[0]
