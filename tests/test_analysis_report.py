"""Figures are written and readable; the HTML report holds every figure, table and the config."""

from __future__ import annotations

import contextlib
import io
import os
import re

import matplotlib.image as mpimg
import pytest
from test_analysis_fixture import SWEEP_YAML, build_results

import analysis
from analysis import figures
from analysis.__main__ import main

# the fixture is schema v2 without calibrated/ and audit/ rows: the attack comparison (loss vs likelihood)
# is shown, the calibrated and epsilon-audit tables and figure are not (tests/test_results_v2.py covers them)
ALL_FIGURES = ["tpr_vs_step", "roc_loss", "vs_train_size", "vs_epsilon", "roc_likelihood", "attack_comparison"]
TABLES = ["loss_best_step", "likelihood", "dp", "attack_comparison"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[str, str, str]:
    """``python -m analysis RESULTS_DIR`` once: (results dir, report path, what it printed)."""
    results_dir = build_results(str(tmp_path_factory.mktemp("out") / "fixture"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([results_dir]) == 0
    return results_dir, os.path.join(results_dir, "report", "report.html"), printed.getvalue()


def test_cli_prints_the_tables_and_the_report_path(cli_run):
    _, report, printed = cli_run
    assert printed.rstrip().endswith(f"report: {report}")
    assert "## Loss attack: the best diffusion step of each setting" in printed and "| ddpm" in printed
    assert "## Differential privacy" in printed and "∞ (no DP)" in printed
    assert printed.count("[holds]") == 3 and "smaller training sets leak more" in printed


def test_every_figure_is_written_and_non_empty(cli_run):
    out_dir = os.path.dirname(cli_run[1])
    for name in ALL_FIGURES:
        image = mpimg.imread(os.path.join(out_dir, f"{name}.png"))
        assert image.shape[0] >= 400 and image.shape[1] >= 600, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
    assert sorted(f for f in os.listdir(out_dir) if f.endswith(".csv")) == sorted(f"{t}.csv" for t in TABLES)


def test_report_embeds_every_figure_table_and_the_config(cli_run):
    html = open(cli_run[1], encoding="utf-8").read()
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)) == len(
        ALL_FIGURES
    )
    for name in ALL_FIGURES:
        assert f'id="figure-{name}"' in html
    for name in TABLES:
        assert f'id="table-{name}"' in html
    assert html.count("<table") == len(TABLES)
    for text in ("TPR@1%FPR", "best step", "ε spent", "final loss", "∞ (no DP)", "n/a", "1.000", "0.920"):
        assert text in html, text
    assert "epsilon: [.inf, 1.0]" in html and SWEEP_YAML.splitlines()[0] in html
    assert 'id="findings"' in html and html.count("<b>holds</b>") == 3


def test_roc_at_requested_steps(cli_run, tmp_path):
    path = figures.roc_loss(analysis.load(cli_run[0]), str(tmp_path), steps=[190, 999])
    assert path == str(tmp_path / "roc_loss.png") and os.path.getsize(path) > 10_000


def test_figures_that_lack_data_are_skipped(tmp_path):
    one_setting = build_results(
        str(tmp_path / "one"), keep=lambda t: t.endswith("-200-nodp"), likelihood=False
    )
    r = analysis.load(one_setting)
    out = str(tmp_path / "figs")
    assert figures.vs_train_size(r, out) is None  # one training-set size
    assert figures.vs_epsilon(r, out) is None  # one epsilon
    assert figures.roc_likelihood(r, out) is None  # no likelihood attack
    html = open(analysis.write_report(one_setting, out), encoding="utf-8").read()
    assert html.count("<img ") == 2 and 'id="figure-tpr_vs_step"' in html and 'id="figure-roc_loss"' in html


def test_finish_is_what_a_sweep_prints_at_its_end(cli_run):
    """One entry point for the sweep: a per-target table of best steps, the findings, the report path."""
    results_dir, _, _ = cli_run
    text, path = analysis.finish(results_dir, report=False)
    assert path is None
    head = next(line.split() for line in text.splitlines() if line.startswith("target"))
    bar = head.index("|")  # per-attack cells follow the bar
    loss, likelihood = head.index("loss") - bar - 1, head.index("likelihood") - bar - 1
    rows = [line.split() for line in text.splitlines() if line.startswith(("ddpm-", "smld-"))]
    assert len(rows) == 8  # one row per target
    for row in rows:
        cells = row[row.index("|") + 1:]
        want = "@200" if row[0].startswith("ddpm") else "@500"  # the fixture's best steps
        assert cells[loss].endswith(want) and "@" not in cells[likelihood], row
    assert text.count("[holds]") == 3


def test_nonfinite_scores_are_named_where_the_results_are_printed(tmp_path, cli_run):
    """NaN / ±inf scores are ranked by the metrics, not refused; the printed summary and the report name them
    (target, attack, how many of each kind, on how many samples), and a clean sweep shows no such line."""
    import glob

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert "warning" not in analysis.finish(cli_run[0], report=False)[0] and "warning" not in cli_run[2]
    assert "nonfinite-scores" not in open(cli_run[1], encoding="utf-8").read()
    root = build_results(str(tmp_path / "fixture"))
    path = sorted(glob.glob(os.path.join(root, "scores", "**", "*.parquet"), recursive=True))[0]
    table = pq.read_table(path)
    frame = table.to_pandas()
    at = frame.index[(frame["attack"] == "loss") & (frame["step"] == frame["step"].min())][:4]
    frame.loc[at, "score"] = [np.nan, np.inf, -np.inf, np.nan]
    i = table.schema.get_field_index("score")  # NaN kept as NaN, as the sweep writes it (from_pandas makes it null)
    pq.write_table(table.set_column(i, "score", pa.array(frame["score"].to_numpy(), pa.float64())), path)
    tid, samples = frame.loc[at[0], "trial_id"], frame.loc[at, "sample_id"].nunique()
    want = (f"warning: {tid} loss: 4 score(s) not finite (2 NaN, 1 +inf, 1 -inf) on {samples} sample(s); ranked as "
            "the least (NaN, -inf) or most (+inf) member-like, so its AUC also measures these failures (rows in "
            "scores/)")
    text, _ = analysis.finish(root, report=False)
    assert [line for line in text.splitlines() if "warning" in line] == [want]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([root]) == 0
    assert [line for line in printed.getvalue().splitlines() if "warning" in line] == [want]
    report = open(os.path.join(root, "report", "report.html"), encoding="utf-8").read()  # the shared artifact too
    assert f'<ul id="nonfinite-scores"><li><b>{want}</b></li></ul>' in report
