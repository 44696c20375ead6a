"""The distributed sweep end to end on a local Ray with 2 CPUs: results, resume, faults, bad configs."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import ray
import sweep_files
from sweep_files import read

from mia_ray import results, sweep_config
from mia_ray.distributed.scoring import score_with_ray
from mia_ray.sweep import main
from mia_ray.training import TargetStore, get_or_train
from mia_ray.trial import eval_samples, score_in_process

pytestmark = pytest.mark.slow

LOSS_STEPS = [0, 50, 100, 999]
TINY = {
    **sweep_files.TINY,
    "attacks": {"loss": {"steps": LOSS_STEPS}, "likelihood": {"max_samples": 3, "rtol": 0.01, "atol": 0.01}},
}


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_sweep(path, store, **over) -> str:
    return sweep_files.write_sweep(path, store, TINY, **over)


@pytest.mark.timeout(600)
def test_two_concurrent_trials_end_to_end(local_ray, store_dir, tmp_path):
    """Two trials at once on 2 CPUs finish (the timeout turns a hang into a failure); results follow the schema."""
    sweep = write_sweep(tmp_path / "s.yaml", store_dir, families=["ddpm", "vpsde"],
                        resources={"max_concurrent_trials": 2})
    assert main([sweep, "--output", str(tmp_path / "out")]) == 0
    root = str(tmp_path / "out" / "t")
    for table, schema in results.SCHEMAS.items():
        if table in results.OPTIONAL_TABLES:
            continue
        ds = pads.dataset(f"{root}/{table}", format="parquet")
        assert ds.schema.equals(schema), table
    m = read(root, "metrics")
    assert len(m) == 2 * (len(LOSS_STEPS) + 1)
    assert not m.duplicated(["trial_id", "attack", "step"]).any()
    assert set(m.loc[m.attack == "loss", "step"]) == set(LOSS_STEPS)
    assert m.loc[m.attack == "likelihood", "step"].isna().all()
    assert (m.schema_version == results.SCHEMA_VERSION).all()
    s = read(root, "scores")
    assert len(s) == 2 * (32 * len(LOSS_STEPS) + 6)
    assert np.allclose(s.score, -s.statistic)
    assert len(read(root, "targets")) == 2 and os.path.isfile(f"{root}/report/report.html")
    t = read(root, "targets")  # utility measured by the training task (issue 13), its grid copied per trial
    assert np.isfinite(t["utility_fd"]).all() and all(os.path.isfile(f"{root}/grids/{i}.png") for i in t.trial_id)
    splits = read(root, "splits")
    ids = splits.groupby(["trial_id", "is_member"]).sample_id.apply(set)
    for tid in m.trial_id.unique():
        assert not ids[(tid, True)] & ids[(tid, False)]
    assert not (tmp_path / "out" / "_tune").exists()  # Tune's logs of a run without failures: removed


def test_ray_data_scores_equal_in_process_scores(local_ray, store_dir, tmp_path):
    attacks = {"loss": {"steps": LOSS_STEPS}, "likelihood": {"max_samples": 3, "rtol": 1e-5, "atol": 1e-5}}
    cfg, _ = sweep_config.load(write_sweep(tmp_path / "s.yaml", store_dir, attacks=attacks))
    trial = sweep_config.expand(cfg)[0]
    store = TargetStore(store_dir)
    target = get_or_train(store, trial.spec, progress=False)
    rows, _ = eval_samples(trial)
    here = pd.DataFrame(score_in_process(target, trial, rows, batch_size=32))
    cfg.resources.scorer_actors, cfg.resources.batch_size = 2, 5
    there, nodes = score_with_ray(store_dir, trial_spec_json(trial), trial.attacks, rows, cfg.resources)
    there = pd.DataFrame(there)
    for frame in (here, there):  # None in process; through Ray Data's Arrow blocks, a null (NaN in numpy)
        frame["step"] = frame["step"].astype("Int64")
    key = ["attack", "step", "sample_id"]
    here, there = here.sort_values(key).reset_index(drop=True), there.sort_values(key).reset_index(drop=True)
    assert here[key].equals(there[key])
    loss = here.attack == "loss"
    assert np.array_equal(here.score[loss], there.score[loss])  # bitwise: noise is keyed by sample id
    # the likelihood attack shares adaptive steps within a batch: equal up to the solver tolerance
    assert np.allclose(here.score[~loss], there.score[~loss], atol=2e-3)
    assert len(nodes) == 1


def trial_spec_json(trial):
    from mia_ray.config import spec_json

    return spec_json(trial.spec)


@pytest.mark.timeout(600)
def test_resume_after_kill_9(local_ray, store_dir, tmp_path):
    out = tmp_path / "out"
    store = str(tmp_path / "own_store")
    # a connected cluster whose node types cannot be learned: the GPU keys must be explicit (preflight refuses null)
    sweep = write_sweep(tmp_path / "s.yaml", store, train_sizes=[64, 80], attacks={"loss": {"steps": [0, 100]}},
                        resources={"scorer_gpus": 0, "train_gpus": 0})
    env = {**os.environ, "RAY_ADDRESS": local_ray}
    proc = subprocess.Popen([sys.executable, "-m", "mia_ray.sweep", sweep, "--output", str(out), "--no-report"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics_dir = out / "t" / "metrics"
    deadline = time.time() + 400
    while time.time() < deadline and not (metrics_dir.is_dir() and any(metrics_dir.glob("*.parquet"))):
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_first = [p.stem for p in metrics_dir.glob("*.parquet")]
    assert len(done_first) == 1, done_first
    def targets_in_store():  # the store also keeps features/ (the utility feature net) and utility/ records
        return [d for d in os.listdir(store) if os.path.isfile(os.path.join(store, d, "target.json"))]

    stored = {d: os.path.getmtime(os.path.join(store, d, "target.json")) for d in targets_in_store()}
    assert main([sweep, "--output", str(out), "--no-report"]) == 0
    m = read(str(out / "t"), "metrics")
    assert len(m) == 2 * 3 and not m.duplicated(["trial_id", "attack", "step"]).any()  # loss x 2 steps + likelihood
    assert {os.path.getmtime(os.path.join(store, d, "target.json")) for d in stored} == set(stored.values())
    assert len(targets_in_store()) == 2


@pytest.mark.timeout(600)
def test_scorer_actor_dies_once_results_equal_a_clean_run(local_ray, store_dir, tmp_path):
    marker = tmp_path / "crashed"
    attacks = {"crash_once": {"marker": str(marker), "steps": [0, 100]}}
    sweep = write_sweep(tmp_path / "s.yaml", store_dir, attacks=attacks, plugins=["mia_ray_test_plugins"])
    assert main([sweep, "--output", str(tmp_path / "faulty"), "--no-report"]) == 0
    assert marker.exists()  # an actor did die
    assert main([sweep, "--output", str(tmp_path / "clean"), "--no-report"]) == 0  # marker present: no crash
    key = ["trial_id", "attack", "step", "sample_id"]
    a = read(str(tmp_path / "faulty" / "t"), "scores").sort_values(key).reset_index(drop=True)
    b = read(str(tmp_path / "clean" / "t"), "scores").sort_values(key).reset_index(drop=True)
    assert (a.attack == "crash_once").sum() == 2 * 16 * 2 and a.equals(b)


BAD = [
    ({"bogus_key": 1}, "bogus_key"),
    ({"eval_size": "many"}, "eval_size"),
    ({"families": ["ddpm", "gan"]}, "families: unknown family 'gan'"),
    ({"attacks": {"loss": {"steps": [5]}, "telepathy": {}}}, "attacks: unknown attack 'telepathy'"),
    ({"data": {"source": "imagenet"}}, "data.source: unknown data source 'imagenet'"),
    ({"epsilons": [10, 0]}, "epsilons"),
    ({"epsilons": [-1]}, "epsilons"),
    ({"attacks": {"loss": {"steps": [0, 1000]}}}, "attacks.loss.steps"),
    ({"attacks": {"loss": {"step": [1]}}}, "attacks.loss"),
    ({"train_sizes": [1790]}, "exceeds the pool of 1797"),
    ({"data": {"source": "hdf5", "path": "/nonexistent/ffhq64.h5"}}, "/nonexistent/ffhq64.h5"),
    ({"data": {"source": "folder"}}, "data.path"),
    ({"resources": {"scorer_gpus": 1}}, "resources.scorer_gpus"),
    ({"resources": {"train_cpus": 64}}, "resources.train_cpus"),
    ({"eval_size": 100}, "eval_size"),
    ({"model": {"block_out_channels": [12, 16]}}, "model.block_out_channels"),
    ({"attacks": {"likelihood": {"rtol": 0}}}, "attacks.likelihood"),
]


@pytest.mark.parametrize("over,needle", BAD, ids=[b[1][:30] for b in BAD])
def test_invalid_config_is_rejected_before_anything_is_written(local_ray, tmp_path, capsys, over, needle):
    sweep = write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), **over)
    assert main([sweep, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_missing_sweep_file_and_dry_run(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    full = os.path.join(os.path.dirname(__file__), "..", "sweeps", "full_paper.yaml")
    assert main([full, "--dry-run"]) == 0  # offline, without the data present
    out = capsys.readouterr().out
    assert "48 target(s)" in out and "dry run" in out
    assert main(["--list"]) == 0
    assert "vesde" in capsys.readouterr().out


def test_dry_run_checks_the_bundled_pool(tmp_path, capsys):
    """With bundled data (digits) --dry-run also refuses a training set the pool cannot hold, writing nothing."""
    quick = os.path.join(os.path.dirname(__file__), "..", "sweeps", "quickstart.yaml")
    assert main([quick, "train_sizes=[5000]", "--output", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "exceeds the pool of 1797 images" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_flags_may_come_after_overrides(tmp_path, capsys):
    quick = os.path.join(os.path.dirname(__file__), "..", "sweeps", "quickstart.yaml")
    assert main([quick, "families=[vpsde]", "--output", str(tmp_path / "o"), "train_sizes=[64]", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 target(s)" in out and str(tmp_path / "o") in out
    assert not (tmp_path / "o").exists()


def test_a_rerun_of_a_complete_sweep_removes_the_tune_logs_a_killed_run_left(tmp_path):
    """kill -9 after the last trial's metrics were written but before Tune's run folder was removed: the rerun
    finds every trial done and runs nothing; it removes that folder too (it stayed for good), others' kept."""
    from sweep_files import load_sweep

    from mia_ray import results, sweep_config
    from mia_ray.distributed.tuning import SweepContext, run_tune

    cfg, _ = load_sweep(tmp_path, [f"output={tmp_path / 'out'}"])
    trials = sweep_config.expand(cfg)
    root = sweep_config.results_root(cfg)
    for t in trials:  # done = the six core tables exist (results.trial_done)
        for table in results.TABLES:
            os.makedirs(os.path.join(root, table), exist_ok=True)
            open(os.path.join(root, table, f"{t.trial_id}.parquet"), "wb").close()
    tune_dir = os.path.join(os.path.dirname(root), "_tune")
    for name in (f"{cfg.name}-20261130-051234", f"other-{cfg.name}-20261130-051234"):
        os.makedirs(os.path.join(tune_dir, name))
    ctx = SweepContext(cfg.name, root, sweep_config.store_root(cfg), cfg.resources, 0, [])
    assert run_tune(trials, ctx) == []
    assert os.listdir(tune_dir) == [f"other-{cfg.name}-20261130-051234"]


def test_tune_logs_of_a_complete_sweep_are_removed_others_kept(tmp_path):
    """Each run left ~0.5 MB under <output>/_tune/ that nothing reads; once the sweep is complete its runs' folders
    (also those of earlier failed runs) go, other sweeps' stay."""
    from mia_ray.distributed.tuning import _remove_run_logs

    for name in ("q-20261130-023957", "q-20261129-235959", "q-x-20261130-023957", "qq-20261130-023957", "q-notes"):
        (tmp_path / "_tune" / name).mkdir(parents=True)
        (tmp_path / "_tune" / name / "log.txt").write_text("x")
    _remove_run_logs(str(tmp_path / "_tune"), "q")
    assert sorted(p.name for p in (tmp_path / "_tune").iterdir()) == ["q-notes", "q-x-20261130-023957",
                                                                      "qq-20261130-023957"]
    _remove_run_logs(str(tmp_path / "_tune"), "q-x")
    _remove_run_logs(str(tmp_path / "_tune"), "qq")
    (tmp_path / "_tune" / "q-notes" / "log.txt").unlink()
    (tmp_path / "_tune" / "q-notes").rmdir()
    _remove_run_logs(str(tmp_path / "_tune"), "q")
    assert not (tmp_path / "_tune").exists()  # empty: removed
    _remove_run_logs(str(tmp_path / "_tune"), "q")  # no folder: nothing to do


def test_scored_rows_come_back_in_input_order_whatever_order_tasks_finish():
    """Ray Data returns blocks as tasks finish: rows in a scheduling-dependent order made LiRA's pooled variance (a
    sum over samples) differ by 1e-14 between runs of lira_small. Each model's rows are put in the input's sample
    order, each sample's rows kept in the order its batch produced them."""
    from mia_ray.distributed.scoring import _input_order

    ids = np.array([7, 3, 11, 5])  # the pass's input order (not sorted)
    rows = [(m, s, k) for m in range(2) for s in ids for k in range(3)]  # model, sample, row of that sample
    rng = np.random.default_rng(0)
    for _ in range(5):
        blocks = [rows[i:i + 6] for i in range(0, len(rows), 6)]
        shuffled = [r for b in rng.permutation(len(blocks)) for r in blocks[b]]  # blocks back in any order
        model = np.array([r[0] for r in shuffled])
        order = _input_order(ids, np.array([r[1] for r in shuffled]), model, 2)
        for m in range(2):
            assert [shuffled[i] for i in order[m]] == [r for r in rows if r[0] == m]
