"""The sweep's exit status: 0 only when every trial is complete and its summary printed."""

import pytest
import sweep_files

import analysis
from mia_ray import results
from mia_ray import sweep as sweep_cli


def _sweep(tmp_path):
    return sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), output=str(tmp_path / "out"))


@pytest.mark.parametrize("summary_fails", [False, True])
def test_a_summary_that_fails_after_every_trial_completed_exits_1(tmp_path, capsys, monkeypatch, summary_fails):
    """The summary at the end refused the folder (e.g. an unreadable table): it printed 'error: ...' and the sweep
    still exited 0, so a script or CI step took the run for a success."""

    def run_on_ray(*a, **k):  # every trial completes without error
        monkeypatch.setattr(results, "trial_done", lambda root, trial_id: True)
        return []

    def finish(root, report):
        if summary_fails:
            raise analysis.AnalysisError(f"{root}/metrics/x.parquet: cannot read Parquet")
        return "SUMMARY-TEXT", None

    monkeypatch.setattr(sweep_cli, "_run_on_ray", run_on_ray)
    monkeypatch.setattr(analysis, "finish", finish)
    assert sweep_cli.main([_sweep(tmp_path)]) == (1 if summary_fails else 0)
    out = capsys.readouterr()
    assert ("error: " in out.err and "cannot read Parquet" in out.err) == summary_fails
    assert ("SUMMARY-TEXT" in out.out) != summary_fails


@pytest.mark.parametrize("flag, env", [(["--address", "local"], None), ([], "local")])
def test_address_local_is_the_sweeps_own_local_ray(tmp_path, monkeypatch, flag, env):
    """``local`` (allowed beside auto and host:port) is a new local Ray, as with no address: the local CPU check
    runs and Ray gets resources.num_cpus; it was taken for a cluster's address (both skipped)."""
    from mia_ray import preflight

    seen, checked = [], []
    monkeypatch.setattr(sweep_cli, "_run_on_ray", lambda *a, **k: seen.append(a[4]) or [])
    monkeypatch.setattr(preflight, "check_local_cpus", lambda r: checked.append(r))
    monkeypatch.setattr(sweep_cli, "_print_results", lambda *a, **k: True)
    monkeypatch.setattr(sweep_cli, "_exit_status", lambda *a, **k: 0)
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert sweep_cli.main([_sweep(tmp_path), *flag]) == 0
    assert seen == [None] and len(checked) == 1
