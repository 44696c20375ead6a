"""Door pass 6, ``python -m analysis`` on bad folders: a null / NaN / out-of-range AUC, files of two schema versions,
a Parquet file of another table, and tables the sweep always writes but a copied folder lacks (a warning)."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_analysis_fixture import build_results

import analysis
from analysis.__main__ import main


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> str:
    return build_results(str(tmp_path_factory.mktemp("door6") / "fixture"))


@pytest.fixture
def folder(pristine, tmp_path) -> str:
    """A fresh copy of the fixture sweep, to damage."""
    return shutil.copytree(pristine, str(tmp_path / "fixture"))


def _refused(root: str, capsys, out: str) -> str:
    """The CLI's one line (exit 2), with no report folder made; the same message from analysis.load."""
    assert main([root, "--out", out]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured
    with pytest.raises(analysis.AnalysisError) as info:
        analysis.load(root)
    assert captured.err == f"error: {info.value}\n"
    return captured.err


def _set_auc(path: str, values) -> None:
    table = pq.read_table(path)
    i = table.schema.get_field_index("auc")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, pa.float64())), path)


@pytest.mark.parametrize("auc, shown", [(None, "nan"), (float("nan"), "nan"), (1.5, "1.5"), (-0.1, "-0.1")])
def test_an_auc_outside_0_1_is_refused_naming_the_trial(folder, tmp_path, capsys, auc, shown):
    """A null AUC dropped its setting from the best-step table and the findings, and made step 0 the attack
    comparison's "best step", with exit 0; the sweep only writes AUCs in [0, 1]."""
    path = f"{folder}/metrics/ddpm-200-eps1.parquet"
    rows = pq.read_metadata(path).num_rows
    _set_auc(path, [0.6] * (rows - 1) + [auc])  # the last row: the likelihood attack (no step)
    err = _refused(folder, capsys, str(tmp_path / "report"))
    assert f"metrics: trial 'ddpm-200-eps1' attack 'likelihood' has auc {shown}; allowed: an AUC in [0, 1]" in err
    assert not (tmp_path / "report").exists()


def test_a_whole_trial_of_null_aucs_names_the_first_row_and_counts_the_rest(folder, tmp_path, capsys):
    path = f"{folder}/metrics/smld-800-nodp.parquet"
    _set_auc(path, [None] * pq.read_metadata(path).num_rows)
    err = _refused(folder, capsys, str(tmp_path / "report"))
    assert "trial 'smld-800-nodp' attack 'loss' step 0 has auc nan (and 5 more row(s))" in err


def test_files_of_two_schema_versions_are_refused_naming_one_of_each(tmp_path, capsys):
    """v1 trials beside v2 ones (an interrupted rerun of a v1 folder, or files copied in) were read together:
    the v1 trials lack calibrated/ and audit/, so v2 findings covered the v2 trials only, silently."""
    root = str(tmp_path / "mixed")
    build_results(root, schema_version=1, keep=lambda t: t.startswith("ddpm"))
    build_results(root, keep=lambda t: t.startswith("smld"))
    err = _refused(root, capsys, str(tmp_path / "report"))
    assert err.startswith(f"error: {root}/") and "files of schema_version 1 (ddpm-" in err, err
    assert "and 2 (smld-" in err and "allowed: one schema_version per results directory" in err


@pytest.mark.parametrize("source, table", [("splits", "metrics"), ("metrics", "targets"), ("targets", "scores")])
def test_a_file_of_another_table_is_refused_naming_it(folder, tmp_path, capsys, source, table):
    shutil.copy(f"{folder}/{source}/ddpm-200-eps1.parquet", f"{folder}/{table}/zz-copied.parquet")
    err = _refused(folder, capsys, str(tmp_path / "report"))
    assert f"{folder}/{table}: missing columns [" in err and "] in zz-copied.parquet; expected" in err


@pytest.mark.parametrize("table, dropped", [("scores", "the ROC curves"), ("targets", "the training columns")])
def test_a_missing_table_is_a_warning_naming_what_the_report_leaves_out(folder, tmp_path, capsys, table, dropped):
    """A folder without scores/ or targets/ (copied without its large scores, deleted by hand) exited 0 with ROC
    figures or DP-table columns silently missing; the metrics alone still give the tables and findings."""
    shutil.rmtree(f"{folder}/{table}")
    assert main([folder, "--out", str(tmp_path / "report")]) == 0
    want = f"warning: {folder}/{table}/ has no Parquet files; the report leaves out {dropped}"
    lines = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(lines) == 1 and lines[0].startswith(want), lines
    assert "missing-tables" in (tmp_path / "report" / "report.html").read_text()


def test_targets_lacking_some_trials_are_a_warning_with_the_count(folder, tmp_path, capsys):
    for trial in ("ddpm-200-eps1", "smld-800-nodp"):
        (tmp_path / "fixture" / "targets" / f"{trial}.parquet").unlink()
    assert main([folder, "--out", str(tmp_path / "report")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert lines == [f"warning: {folder}/targets/ has no row for 2 of 8 trial(s) (e.g. ddpm-200-eps1); the report "
                     "leaves out the training columns of the DP table (final loss, δ, noise multiplier) and the "
                     "privacy-utility figure for them"]


def test_a_complete_folder_and_one_without_splits_have_no_warning(folder, tmp_path, capsys):
    """splits/ feeds nothing in the report (it is for the user's own joins): no warning."""
    assert main([folder, "--out", str(tmp_path / "a")]) == 0
    shutil.rmtree(f"{folder}/splits")
    assert main([folder, "--out", str(tmp_path / "b")]) == 0
    assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize("sub", ["metrics", "scores", "report"])
def test_a_table_or_the_report_folder_given_names_its_results_directory(folder, tmp_path, capsys, sub):
    """A table's folder was refused as "not a mia_ray results directory", without saying which folder to pass."""
    import os

    os.makedirs(f"{folder}/report", exist_ok=True)
    err = _refused(f"{folder}/{sub}", capsys, str(tmp_path / "out"))
    assert err.endswith(f"; it is {sub}/ of the results directory {folder}: pass that\n"), err


@pytest.mark.parametrize("blocker", ["dp.csv", "roc_loss.png", "report.html"])
def test_a_folder_named_like_a_report_file_is_refused_before_writing(folder, tmp_path, capsys, blocker):
    """dp.csv/ in the --out folder was an IsADirectoryError traceback after the CSVs before it were written
    (report.html/: after every table and figure)."""
    import os

    out = tmp_path / "report"
    (out / blocker).mkdir(parents=True)
    assert main([folder, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: report folder {out}: {blocker} is a folder, where the report writes a file; allowed: a "
                   "folder without folders named like its files (<table>.csv, <figure>.png, report.html): remove them "
                   "or pass another --out\n")
    assert os.listdir(out) == [blocker]
