"""analysis.load: the four tables, lazy scores, and one-line errors on directories it cannot read."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_analysis_fixture import N, build_results

import analysis
from analysis.__main__ import main
from mia_ray.results import SCHEMA_VERSION


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> str:
    return build_results(str(tmp_path_factory.mktemp("out") / "fixture"))


def test_load_returns_the_four_tables_and_the_config(results_dir):
    r = analysis.load(results_dir)
    assert len(r.metrics) == 8 * 6 and len(r.targets) == 8
    assert set(r.metrics["attack"]) == {"loss", "likelihood"}
    assert r.metrics.loc[r.metrics["attack"] == "likelihood", "step"].isna().all()
    assert r.metrics["step"].dtype == "Int64"
    assert "grid:" in r.config_text and r.sweep_name == "fixture"
    assert "scores" not in r.__dict__  # scores are read on first use only
    assert len(r.scores) == 8 * 6 * 2 * N
    assert len(r.splits) == sum(ts + N for ts in (200, 800) for _ in range(4))
    assert "trials=8" in repr(r)


def test_read_scores_filters_rows_and_columns(results_dir):
    r = analysis.load(results_dir)
    s = analysis.read_scores(r, attack="loss", step=[200, 500], trial_id="ddpm-200-nodp", columns=["score"])
    assert list(s.columns) == ["score"] and len(s) == 2 * 2 * N
    lik = analysis.read_scores(r, attack="likelihood")
    assert len(lik) == 8 * 2 * N and lik["step"].isna().all()


def _error(path) -> str:
    with pytest.raises(analysis.AnalysisError) as info:
        analysis.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path).rstrip("/") in message
    return message


def test_missing_directory(tmp_path):
    assert "not found" in _error(tmp_path / "nope")


def test_a_file_is_not_a_results_directory(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert "not a directory" in _error(tmp_path / "f.txt")


def test_foreign_directory(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "notes.csv").write_text("a,b\n")
    assert "not a mia_ray results directory" in _error(tmp_path)
    assert "metrics/*.parquet" in _error(tmp_path)


def test_the_output_dir_above_a_sweep_names_the_sweeps(results_dir):
    parent = os.path.dirname(results_dir)
    assert "holds the sweeps fixture" in _error(parent)


def test_wrong_schema_version(tmp_path):
    root = build_results(str(tmp_path / "v2"), schema_version=SCHEMA_VERSION + 1)
    message = _error(root)
    assert (
        f"schema_version {SCHEMA_VERSION + 1}" in message
        and f"reads schema_version {SCHEMA_VERSION}" in message
    )


def test_missing_columns(tmp_path):
    os.makedirs(tmp_path / "metrics")
    pq.write_table(
        pa.table({"auc": [0.5], "schema_version": [SCHEMA_VERSION]}), tmp_path / "metrics" / "t.parquet"
    )
    assert "missing columns" in _error(tmp_path)


@pytest.mark.parametrize("table", ["metrics", "scores"])
def test_a_damaged_parquet_file_is_one_line_naming_it(tmp_path, table):
    """A truncated or foreign file under a table (a copy cut short, a disk error) names the file, not a traceback."""
    import shutil

    root = build_results(str(tmp_path / "fixture"))
    victim = sorted((tmp_path / "fixture" / table).iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:5])
    message = _error(root)
    assert str(victim) in message and "cannot read Parquet" in message and "delete it and re-run" in message
    shutil.copy(victim, tmp_path / "fixture" / table / "zz_foreign.parquet")  # an extra damaged file, too
    victim.unlink()
    assert "zz_foreign.parquet" in _error(root)


@pytest.mark.parametrize("sub", ["", "report"])
def test_cli_refuses_an_out_path_through_a_file(results_dir, tmp_path, capsys, sub):
    """--out at or below a file was a FileExistsError / NotADirectoryError traceback."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    out = blocker / sub if sub else blocker
    assert main([results_dir, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    allowed = "allowed: a folder path (created if missing)"
    assert err == f"error: --out {out}: {blocker} is a file, not a folder; {allowed}\n"
    assert blocker.read_text() == "mine"


def test_cli_reports_a_bad_directory_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: results directory not found") and err.count("\n") == 1


def test_analysis_never_imports_torch_or_ray(results_dir, tmp_path):
    script = textwrap.dedent(
        f"""
        import runpy, sys

        class Block:  # any import of torch or ray now fails loudly (a None in sys.modules confuses scipy)
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "ray"):
                    raise ImportError(f"analysis imported {{name}}")

        sys.meta_path.insert(0, Block())
        import analysis, analysis.figures, analysis.report, analysis.tables
        sys.argv = ["analysis", {results_dir!r}, "--out", {str(tmp_path / "report")!r}]
        try:
            runpy.run_module("analysis", run_name="__main__")
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray"))
        assert not heavy, heavy
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.parametrize("argv, line", [
    ([], r"^error: the following arguments are required: results_dir; see python -m analysis --help$"),
    (["R", "--outt", "x"], r"^error: unrecognized arguments: --outt x; see python -m analysis --help$"),
])
def test_cli_usage_errors_are_one_line(results_dir, capsys, argv, line):
    """argparse printed its usage block before the error."""
    import re

    with pytest.raises(SystemExit) as e:
        main([results_dir if a == "R" else a for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and re.match(line, err), err


@pytest.mark.parametrize("out", ["/proc/mia_ray_report", "/sys/mia_ray_report"])
def test_cli_refuses_an_out_folder_that_cannot_be_made(results_dir, capsys, out):
    """Root passes access(2) on /proc and /sys, but no folder can be made there: a FileNotFoundError /
    PermissionError traceback (another user is refused by the access check, in one line too)."""
    assert main([results_dir, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert err.startswith(f"error: --out {out}: "), err
    if os.geteuid() == 0:
        assert "cannot create a folder in /" in err, err
    assert not os.path.exists(out)
