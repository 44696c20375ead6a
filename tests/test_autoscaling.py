"""The cluster path end to end, offline, on Ray's own autoscaler with its fake multi-node provider.

The head is started as ``ray up cluster/aws.yaml`` starts it: ``resources: {CPU: 0}``, the cluster config at
``~/ray_bootstrap_config.yaml`` and ``ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml``.
The worker node types are cluster/aws.yaml's (read from the file, so the two cannot drift apart), with
their logical GPUs and max_workers but one CPU each, so that the launched "machines" (raylets on this
machine) fit on 2 cores. A tiny sweep with the GPU keys left ``null`` (auto: one GPU to train and one per
scorer, resolved from the node types) goes through the CLI: nothing runs until the autoscaler adds a GPU worker.

``ray.cluster_utils.AutoscalingCluster`` is not used: on Ray 2.58 it reads a ``fake_multi_node/example.yaml``
missing from the wheel, and its ``start()`` runs ``ray stop --force``, which ends every Ray process on the
machine. This builds the same from its pieces, in its own temp dir, HOME and ports, and stops only the
processes of its own session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sweep_files
import yaml
from sweep_files import read

from mia_ray import sweep_config
from mia_ray.training import TargetStore, get_or_train
from mia_ray.trial import eval_samples, score_in_process

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]

ROOT = Path(__file__).resolve().parents[1]
AWS = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
FAKE_HEAD = "ray.head.default"  # the head node type name the fake provider tags its head with
IDLE_MINUTES = 0.25
# scorer_gpus and train_gpus stay null (auto): preflight must make them 1 from the GPU node types
RESOURCES = {"scorer_actors": 1, "scorer_cpus": 1, "train_cpus": 1, "max_concurrent_trials": 1, "batch_size": 8}
KEY = ["attack", "step", "sample_id"]
NODES = (
    "import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False); "
    "print(json.dumps([{'alive': n['Alive'], 'resources': n['Resources'], 'id': n['NodeID']} for n in ray.nodes()]))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def fake_cluster_config(gcs_address: str) -> dict:
    """cluster/aws.yaml's head and worker types on the fake multi-node provider (1 CPU per worker)."""
    types = {FAKE_HEAD: {"resources": AWS["available_node_types"][AWS["head_node_type"]]["resources"],
                         "node_config": {}, "max_workers": 0}}
    for name, t in AWS["available_node_types"].items():
        if name != AWS["head_node_type"]:
            res = {**t["resources"], "CPU": min(t["resources"]["CPU"], 1)}
            types[name] = {"resources": res, "node_config": {}, "min_workers": 0, "max_workers": t["max_workers"]}
    return {
        "cluster_name": "mia-ray-fake",
        "max_workers": AWS["max_workers"],
        "upscaling_speed": AWS["upscaling_speed"],
        "idle_timeout_minutes": IDLE_MINUTES,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "auth": {},
        "available_node_types": types,
        "head_node_type": FAKE_HEAD,
        "docker": {},
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                           "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


class FakeAutoscalingCluster:
    """A head with the autoscaler on the fake multi-node provider; stops only its own session's processes."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mras", dir="/tmp")  # short: Unix socket paths are limited
        self.home = os.path.join(self.dir, "home")
        os.makedirs(self.home)
        from ray._private.services import get_node_ip_address

        self.address = f"{get_node_ip_address()}:{free_port()}"
        self.config = fake_cluster_config(self.address)
        with open(os.path.join(self.home, "ray_bootstrap_config.yaml"), "w") as f:
            json.dump(self.config, f)  # JSON is YAML
        self.session = None

    def start(self):
        env = {**os.environ, "HOME": self.home, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        head = self.config["available_node_types"][FAKE_HEAD]["resources"]
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head",
            f"--port={self.address.rsplit(':', 1)[1]}", f"--num-cpus={head.get('CPU', 0)}",
            f"--num-gpus={head.get('GPU', 0)}", f"--temp-dir={self.dir}/t", "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            "--disable-usage-stats", "--autoscaling-config=~/ray_bootstrap_config.yaml",
        ]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        self.session = os.path.basename(os.path.realpath(f"{self.dir}/t/session_latest"))

    def nodes(self) -> list[dict]:
        """Every node the GCS knows (alive and dead), through a separate driver."""
        out = subprocess.run([sys.executable, "-c", NODES, self.address], check=True, capture_output=True,
                             text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def monitor_log(self) -> str:
        return Path(f"{self.dir}/t/{self.session}/logs/monitor.log").read_text()

    def pids(self) -> set[int]:
        """Processes whose command line names this session, and their descendants."""
        if not self.session:
            return set()
        parents, mine = {}, set()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{d}/cmdline").read_bytes()
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if self.session.encode() in cmdline and int(d) != os.getpid():
                mine.add(int(d))
        grew = True
        while grew:
            kids = {p for p, pp in parents.items() if pp in mine} - mine
            mine |= kids
            grew = bool(kids)
        return mine

    def stop(self):
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            pids = self.pids()
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while self.pids() and time.time() < deadline:
                time.sleep(0.5)


@pytest.fixture(scope="module")
def fake_cluster():
    c = FakeAutoscalingCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.dir, ignore_errors=True)


def gpu_nodes(nodes: list[dict], alive: bool | None = None) -> list[dict]:
    return [n for n in nodes if n["resources"].get("GPU", 0) > 0 and (alive is None or n["alive"] == alive)]


@pytest.mark.timeout(900)
def test_sweep_on_autoscaling_cluster_launches_gpu_workers_and_matches_in_process(fake_cluster, tmp_path):
    assert not gpu_nodes(fake_cluster.nodes()), "the cluster must start with the head only"
    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), resources=RESOURCES)
    out = tmp_path / "out"
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "mia_ray.sweep", sweep, "--address", fake_cluster.address, "--output", str(out),
           "--no-report"]
    t0 = time.time()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=800)
    sweep_s = time.time() - t0
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    # preflight learned the node types from the head's bootstrap config and resolved nothing to CPU-only
    cluster_line = next(line for line in run.stdout.splitlines() if line.startswith("  cluster:"))
    for name in AWS["available_node_types"]:
        if name != AWS["head_node_type"]:
            assert name in cluster_line, cluster_line
    assert "ray_bootstrap_config.yaml on the head" in cluster_line
    resolved = next(line for line in run.stdout.splitlines() if "resources (resolved)" in line)
    assert "x 1 CPU / 1 GPU, training 1 CPU / 1 GPU" in resolved, resolved

    # the autoscaler launched a GPU worker for the trial (nothing GPU-bound can run on the CPU-0, GPU-0 head)
    added, _ = scaling_events(fake_cluster.monitor_log())
    assert "gpu_1x" in added, added  # the smallest type holding a 1-GPU task

    # results are complete and equal a single-process run (its own target, trained here)
    root = str(out / "t")
    m, s = read(root, "metrics"), read(root, "scores")
    steps = sweep_files.TINY["attacks"]["loss"]["steps"]
    assert len(m) == len(steps) and not m.duplicated(["trial_id", "attack", "step"]).any()
    cfg, _ = sweep_config.load(sweep, [f"store={tmp_path / 'ref_store'}"])
    (trial,) = sweep_config.expand(cfg)
    target = get_or_train(TargetStore(cfg.store), trial.spec, progress=False)
    rows, _ = eval_samples(trial)
    here = pd.DataFrame(score_in_process(target, trial, rows, batch_size=8)).sort_values(KEY).reset_index(drop=True)
    there = s.sort_values(KEY).reset_index(drop=True)
    assert len(there) == 2 * sweep_files.TINY["eval_size"] * len(steps)
    nullable = {"step": "Int64"}  # None in process, an int through Parquet
    assert there[KEY].astype(nullable).equals(here[KEY].astype(nullable))
    assert np.array_equal(there.score.to_numpy(), here.score.to_numpy())

    # idle workers are removed after idle_timeout_minutes: every node the autoscaler added goes again (under
    # load it may add more nodes than the one that is used, while the first is still starting)
    t1, deadline = time.time(), time.time() + 300
    while not settled(fake_cluster) and time.time() < deadline:
        time.sleep(3)
    assert settled(fake_cluster), "idle GPU workers were not removed"
    added, removed = scaling_events(fake_cluster.monitor_log())
    print("\n" + "\n".join(line for line in run.stdout.splitlines() if line.startswith("  cluster:") or
                            "resolved" in line))
    print(f"autoscaling run: sweep {sweep_s:.0f} s (CLI wall time); the autoscaler added {added} and removed "
          f"{removed}, the last {time.time() - t1:.0f} s after the sweep ended (idle_timeout_minutes={IDLE_MINUTES})")


def scaling_events(log: str) -> tuple[dict, dict]:
    """Nodes added and removed as idle, per node type, from the autoscaler's own log."""
    added, removed = {}, {}
    for n, t in re.findall(r"Adding (\d+) node\(s\) of type (\S+)\.", log):
        added[t] = added.get(t, 0) + int(n)
    for n, t in re.findall(r"Removing (\d+) nodes of type (\S+) \(idle\)", log):
        removed[t] = removed.get(t, 0) + int(n)
    return added, removed


def settled(cluster) -> bool:
    added, removed = scaling_events(cluster.monitor_log())
    return added == removed and not gpu_nodes(cluster.nodes(), alive=True)
