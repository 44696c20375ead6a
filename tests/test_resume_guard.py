"""Resuming a results folder whose finished trials were scored with other attacks is refused before Ray starts
(trial ids hash the target, not the attacks: the folder would mix two protocols)."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sweep_files

from mia_ray import sweep_config
from mia_ray.errors import ConfigError
from mia_ray.results import TABLES
from mia_ray.resume import check_resumable, expected_rows


def sweep(tmp_path, attacks):
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), output=str(tmp_path / "out"),
                                   attacks=attacks)
    cfg, _ = sweep_config.load(path)
    return path, sweep_config.results_root(cfg), sweep_config.expand(cfg)


def finish(root, trial, rows, n=16):
    """A finished trial as trial_done sees it (every core table), its metrics holding (attack, step) ``rows``,
    each over ``n`` members and ``n`` non-members (TINY's eval_size)."""
    for t in TABLES:
        os.makedirs(f"{root}/{t}", exist_ok=True)
        open(f"{root}/{t}/{trial.trial_id}.parquet", "wb").close()
    attack, step = zip(*rows, strict=True)
    table = pa.table({"attack": pa.array(attack, pa.string()), "step": pa.array(step, pa.int64()),
                      "n_members": pa.array([n] * len(rows), pa.int64()),
                      "n_nonmembers": pa.array([n] * len(rows), pa.int64())})
    pq.write_table(table, f"{root}/metrics/{trial.trial_id}.parquet")


def test_same_attacks_resume_and_nothing_finished_is_not_checked(tmp_path):
    _, root, trials = sweep(tmp_path, {"loss": {"steps": [0, 50]}, "likelihood": {}, "secmi": {"t_sec": 100}})
    check_resumable(root, trials)  # no folder yet
    assert expected_rows(trials[0]) == {("loss", 0), ("loss", 50), ("likelihood", None), ("secmi", 100)}
    finish(root, trials[0], sorted(expected_rows(trials[0]), key=str))
    check_resumable(root, trials)


@pytest.mark.parametrize("old, shown", [
    ([("loss", 0), ("loss", 50), ("secmi", 100)], r"secmi: steps \[100\] there, \[100, 200, 300, 400\] now"),
    ([("loss", 0), ("secmi", 100), ("secmi", 200), ("secmi", 300), ("secmi", 400)],
     r"loss: steps \[0\] there, \[0, 50\] now"),
    ([("loss", 0), ("loss", 50), ("pia", 10)], r"pia: steps \[10\] there, none now; secmi: steps none there"),
])
def test_other_attacks_or_steps_are_refused_in_one_line(tmp_path, old, shown):
    """e.g. a folder written before SecMI's default became four t_sec, resumed with ``secmi: {}``."""
    _, root, trials = sweep(tmp_path, {"loss": {"steps": [0, 50]}, "secmi": {}})
    finish(root, trials[0], old)
    with pytest.raises(ConfigError, match=rf"^{root}: its finished trials \(e\.g\. {trials[0].trial_id}\) were "
                                          rf"scored with other attacks than this sweep's \({shown}") as e:
        check_resumable(root, trials)
    assert "\n" not in str(e.value) and "new name or output" in str(e.value)


def test_other_sample_counts_are_refused(tmp_path):
    """eval_size (or an attack's max_samples) is not in the trial id either: 8 + 8 samples there, 16 + 16 now."""
    _, root, trials = sweep(tmp_path, {"loss": {"steps": [0]}, "likelihood": {"max_samples": 4}})
    finish(root, trials[0], [("loss", 0), ("likelihood", None)], n=4)
    with pytest.raises(ConfigError, match=r"\(loss: 4 \+ 4 samples there, 16 \+ 16 now\); allowed: resume with the "
                                          r"same attacks and eval_size"):
        check_resumable(root, trials)


def test_the_command_refuses_before_ray_starts(tmp_path, capsys, monkeypatch):
    from mia_ray import sweep as sweep_cli

    path, root, trials = sweep(tmp_path, {"loss": {"steps": [0, 50]}})
    finish(root, trials[0], [("loss", 0)])
    monkeypatch.setattr(sweep_cli, "_run_on_ray", lambda *a, **k: pytest.fail("Ray was started"))
    assert sweep_cli.main([path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {root}: its finished trials") and err.count("\n") == 1
