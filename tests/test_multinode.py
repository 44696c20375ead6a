"""A simulated multi-node cluster on one machine (``ray.cluster_utils.Cluster``): a 1-CPU head and two worker
nodes of 1 CPU + 1 logical GPU each. Torch sees no CUDA, so every scoring task runs on CPU (as intended).

All nodes share this machine's filesystem and IP address, so node-local output paths are accepted
(``preflight.check_output`` refuses them only when the cluster spans several hosts).
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
import ray
import sweep_files
from ray.cluster_utils import Cluster
from sweep_files import read

from mia_ray import sweep_config
from mia_ray.attacks import ATTACKS
from mia_ray.attacks.loss import LossAttack, LossParams
from mia_ray.config import spec_json
from mia_ray.distributed.scoring import score_with_ray
from mia_ray.sweep import main
from mia_ray.training import TargetStore, get_or_train
from mia_ray.trial import eval_samples, score_in_process

pytestmark = pytest.mark.slow

LOSS_STEPS = [0, 25, 50, 100, 200, 999]
MULTINODE = {
    **sweep_files.TINY,
    "name": "mn",
    "attacks": {"loss": {"steps": LOSS_STEPS}, "paced_loss": {"seconds": 1.0}},
    "plugins": ["test_multinode"],
    "resources": {"scorer_actors": 2, "scorer_cpus": 1, "scorer_gpus": 1, "train_cpus": 1,
                  "max_concurrent_trials": 1, "batch_size": 4},
}
ROWS = 2 * 16  # eval_size members + as many non-members
STEPS = len(LOSS_STEPS) + 1  # (attack, step) pairs per trial: the loss steps and paced_loss at step 0
WORKER = {"num_cpus": 1, "num_gpus": 1}
KEY = ["attack", "step", "sample_id"]


@dataclass
class PacedLossParams(LossParams):
    seconds: float = 1.0  # sleep per batch, so that scoring outlasts the start-up of every worker
    steps: list[int] = field(default_factory=lambda: [0])
    busy_dir: str = ""  # when set, each batch drops a file named after its node id here (node removal test)


# A plugin (``plugins: [test_multinode]``; conftest puts tests/ on the workers' PYTHONPATH): the loss attack,
# slowed down. A tiny model scores a batch in milliseconds; without the pause the first worker to start would
# score every batch before its peers are up, and nothing would be spread.
if "paced_loss" not in ATTACKS:

    @ATTACKS.register("paced_loss")
    class PacedLoss(LossAttack):
        Params = PacedLossParams

        def run(self, adapter, images, sample_ids, params):
            if params.busy_dir:  # scoring runs as tasks (no actor to find): say where a batch is in flight
                os.makedirs(params.busy_dir, exist_ok=True)
                open(os.path.join(params.busy_dir, ray.get_runtime_context().get_node_id()), "w").close()
            time.sleep(params.seconds)
            return super().run(adapter, images, sample_ids, params)


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    workers = [c.add_node(**WORKER) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    c.workers = workers
    yield c
    ray.shutdown()
    c.shutdown()


def write_sweep(path, store, **over) -> str:
    """A tiny sweep whose scorers need a (logical) GPU each: they can only run on the worker nodes."""
    return sweep_files.write_sweep(path, store, MULTINODE, **over)


def in_process_scores(sweep_path) -> dict:
    """The single-process reference scores of every trial of a sweep (training the targets if needed)."""
    cfg, _ = sweep_config.load(sweep_path)
    out = {}
    for trial in sweep_config.expand(cfg):
        target = get_or_train(TargetStore(cfg.store), trial.spec, progress=False)
        rows, _ = eval_samples(trial)
        s = steps_as_int64(pd.DataFrame(score_in_process(target, trial, rows, batch_size=32)))
        out[trial.trial_id] = s.sort_values(KEY).reset_index(drop=True)
    return out


def steps_as_int64(frame: pd.DataFrame) -> pd.DataFrame:
    """The step column as pandas' nullable Int64: None in process, int64 or NaN through Ray/Parquet."""
    return frame.assign(step=frame["step"].astype("Int64"))


def worker_nodes(cluster) -> set:
    return {w.node_id for w in cluster.workers}


@pytest.mark.timeout(300)
def test_scorers_spread_over_nodes_and_match_a_single_process(cluster, store_dir, tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml", store_dir)
    reference = in_process_scores(sweep)
    cfg, _ = sweep_config.load(sweep)
    trial = sweep_config.expand(cfg)[0]
    rows, _ = eval_samples(trial)

    # one trial scored straight through Ray Data: 32 samples in batches of 4 on 2 one-GPU scoring tasks
    cols, nodes = score_with_ray(store_dir, spec_json(trial.spec), trial.attacks, rows, cfg.resources)
    assert len(nodes) >= 2 and nodes <= worker_nodes(cluster), nodes  # GPU tasks: worker nodes only
    there = steps_as_int64(pd.DataFrame(cols)).sort_values(KEY).reset_index(drop=True)
    here = reference[trial.trial_id]
    assert here[KEY].equals(there[KEY])
    assert np.array_equal(here.score.to_numpy(), there.score.to_numpy())  # bitwise

    # the whole sweep through Tune on the cluster
    out = tmp_path / "out"
    assert main([sweep, "--output", str(out), "--no-report"]) == 0
    root = str(out / "mn")
    m = read(root, "metrics")
    assert len(m) == STEPS and not m.duplicated(["trial_id", "attack", "step"]).any()
    s = steps_as_int64(read(root, "scores")).sort_values(KEY).reset_index(drop=True)
    assert len(s) == ROWS * STEPS
    assert s[KEY].equals(here[KEY]) and np.array_equal(s.score.to_numpy(), here.score.to_numpy())


@pytest.mark.timeout(400)
def test_losing_a_worker_node_mid_sweep_still_completes(cluster, tmp_path):
    """A worker node disappears while its scoring tasks have batches in flight (2 trials, one at a time): Ray
    Data retries the lost tasks on the remaining worker, and the sweep ends with complete, exact results."""
    store = str(tmp_path / "store")
    out = tmp_path / "out"
    busy = str(tmp_path / "busy")
    sweep = write_sweep(tmp_path / "s.yaml", store, train_sizes=[64, 80],
                        attacks={**MULTINODE["attacks"], "paced_loss": {"seconds": 1.0, "busy_dir": busy}})
    reference = in_process_scores(sweep)
    if os.path.isdir(busy):
        for f in os.listdir(busy):  # in_process_scores ran the plugin too
            os.remove(os.path.join(busy, f))  # also stores the targets: the sweep goes straight to scoring
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    cmd = [sys.executable, "-m", "mia_ray.sweep", sweep, "--output", str(out), "--no-report"]
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        victim = wait_for_a_busy_scorer(cluster, proc, busy, deadline=time.time() + 200)
        cluster.remove_node(victim)  # no replacement: the rest of the sweep runs on the one worker left
        cluster.workers.remove(victim)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        while len(cluster.workers) < 2:  # restore the module's cluster for any later test
            cluster.workers.append(cluster.add_node(**WORKER))
    assert rc == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    root = str(out / "mn")
    m = read(root, "metrics")
    assert len(m) == 2 * STEPS and not m.duplicated(["trial_id", "attack", "step"]).any()
    s = steps_as_int64(read(root, "scores"))
    assert len(s) == 2 * ROWS * STEPS and not s.duplicated(["trial_id"] + KEY).any()
    # the results equal a single-process run, bitwise
    for tid, here in reference.items():
        there = s[s.trial_id == tid].sort_values(KEY).reset_index(drop=True)
        assert there[KEY].equals(here[KEY]) and np.array_equal(there.score.to_numpy(), here.score.to_numpy()), tid


def wait_for_a_busy_scorer(cluster, proc, busy_dir, deadline):
    """A worker node where a scoring task has a batch in flight (its paced_loss dropped a file in ``busy_dir``)."""
    workers = {w.node_id: w for w in cluster.workers}
    while time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before a node could be removed"
        names = os.listdir(busy_dir) if os.path.isdir(busy_dir) else []
        for node in names:
            if node in workers:
                return workers[node]
        time.sleep(0.2)
    raise AssertionError("no scoring task started in time")
