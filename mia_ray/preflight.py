"""Checks that need the data or the cluster, run after config validation and before any compute."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError, DataError
from .sweep_config import SOURCES_WITH_PATH

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "beegfs", "gpfs", "ceph", "glusterfs", "efs", "9p")


def check_data(cfg) -> None:
    """The data source opens and its pool holds the largest training set plus the non-members."""
    from .door import check_inputs, given_membership, open_pool  # issue 14: pool content + model.pretrained

    try:
        source = open_pool(cfg)
    except DataError as e:
        hint = ""
        if cfg.data.source in SOURCES_WITH_PATH and not given_membership(cfg):
            hint = " (prepare the images as described in README 'Data', then set data.path=...)"
        raise DataError(f"{e}{hint}") from None
    need = max(cfg.train_sizes) + cfg.eval_size
    if not given_membership(cfg) and len(source) < need:  # given: sizes checked by sweep_config.given_sizes
        raise ConfigError(
            f"train_sizes/eval_size: max(train_sizes) + eval_size = {need} exceeds the pool of {len(source)} "
            f"images of {source.describe()}"
        )
    check_inputs(cfg, source)


@dataclass
class ClusterView:
    """What preflight needs to know of a Ray cluster: total resources and the live nodes' records."""

    total: dict
    nodes: list  # ray.nodes() entries that are alive ("Resources", "NodeManagerAddress", ...)


def resolve_resources(cfg, cluster: ClusterView) -> None:
    """Fill the ``null`` (auto) resources from the cluster so that every GPU (or CPU) is kept busy.

    An autoscaling cluster that starts without GPU workers reports no GPUs: set the GPU keys explicitly
    there (sweeps/full_paper.yaml does).
    """
    total = cluster.total
    gpus, cpus = total.get("GPU", 0), total.get("CPU", 1)
    r = cfg.resources
    if r.scorer_gpus is None:
        r.scorer_gpus = 1.0 if gpus >= 1 else 0.0
    if r.train_gpus is None:
        r.train_gpus = 1.0 if gpus >= 1 else 0.0
    if r.max_concurrent_trials is None:
        if gpus >= 1 and (r.scorer_gpus or r.train_gpus):
            per_trial = max(r.scorer_actors * r.scorer_gpus, r.train_gpus)
            r.max_concurrent_trials = max(1, int(gpus // per_trial))
        else:
            r.max_concurrent_trials = max(1, int(cpus // max(r.train_cpus, r.scorer_actors * r.scorer_cpus)))


def check_resources(cfg, cluster: ClusterView) -> None:
    """Refuse resources that the cluster can never satisfy (they would hang, not fail)."""
    total, nodes = cluster.total, cluster.nodes
    cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    gpus = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    r = cfg.resources
    for key, need, have, what in (
        ("resources.scorer_cpus", r.scorer_cpus, cpus, "CPUs"),
        ("resources.train_cpus", r.train_cpus, cpus, "CPUs"),
        ("resources.scorer_gpus", r.scorer_gpus, gpus, "GPUs"),
        ("resources.train_gpus", r.train_gpus, gpus, "GPUs"),
    ):
        if need > have:
            raise ConfigError(
                f"{key} = {need} can never be satisfied: the largest node has {have:g} {what} "
                f"(cluster total {total.get(what[:-1].upper() if what == 'CPUs' else 'GPU', 0):g})"
            )


def check_output(cfg, cluster: ClusterView) -> None:
    """With several machines, results and the target store must be on shared storage."""
    hosts = {n["NodeManagerAddress"] for n in cluster.nodes}
    if len(hosts) < 2:
        return
    for key in ("output", "store"):
        path = getattr(cfg, key)
        if path and "://" not in path and not _on_network_fs(path):
            raise ConfigError(
                f"{key} = {path!r} is node-local but the cluster has {len(hosts)} machines: results would be "
                f"scattered; use shared storage ({key}=s3://bucket/prefix or an NFS/EFS mount)"
            )


def _on_network_fs(path: str) -> bool:
    """True when the longest mount point containing ``path`` is a network filesystem."""
    path = os.path.abspath(path)
    best, fstype = "", ""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt, typ = parts[1], parts[2]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, fstype = mnt, typ
    except OSError:
        return False
    return fstype.split(".")[0] in NETWORK_FS or fstype.startswith("fuse")
