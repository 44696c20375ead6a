"""Connect to a Ray cluster, or start a local one tuned for sweeps; learn what the cluster can provide."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket

import ray
import yaml

from ..errors import ConfigError
from ..preflight import ClusterView, NodeType, check_address, node_types_from_cluster_yaml

log = logging.getLogger("mia_ray")

# A local Ray keeps idle task workers alive, so the next training task reuses a worker that has already
# imported torch + diffusers. With Ray's defaults (soft limit = CPU count, idle workers killed after 1 s) each
# of the quickstart's 12 training tasks started a fresh worker and paid ~7-10 s of imports (measured: 12
# distinct training pids; with these settings: one per concurrent slot).
LOCAL_SYSTEM_CONFIG = {"num_workers_soft_limit": 16, "idle_worker_killing_time_threshold_ms": 600_000}
# Where `ray up` leaves the cluster config on the head; `ray start --autoscaling-config` reads it there.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
# Launched nodes of these providers run on the head's own machine (Ray's single-machine test providers).
SAME_HOST_PROVIDERS = ("fake_multinode",)


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, log_to_driver: bool = True):
    """Yield with Ray initialised: join ``address``, else start a local Ray; shut down only what we started.
    ``log_to_driver=False`` keeps the workers' output in Ray's log files (the sweep's quiet console)."""
    if ray.is_initialized():
        yield
        return
    if address:
        check_reachable(address)
    local = {} if address else {"num_cpus": num_cpus, "_system_config": LOCAL_SYSTEM_CONFIG}
    # address "local": a new local Ray. With None, ray.init joins any cluster that `ray start` left running on
    # this machine (and then refuses num_cpus with a traceback): the sweep's default is its own local Ray.
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=log_to_driver,
                 configure_logging=False, **local)
    except (RuntimeError, ValueError, ConnectionError) as e:
        line = version_mismatch_line(str(e), address)
        if line is None and "ray[client]" in str(e):  # a ray:// address without Ray Client installed
            line = (f"--address {address}: Ray Client is not installed here; pip install 'ray[client]' "
                    f"(same version as the cluster), or submit with `ray job submit` so the driver runs on the head")
        if line is None and address and isinstance(e, ConnectionError):  # "auto" with no cluster on this machine
            line = f"--address {address} (or RAY_ADDRESS): {' '.join(str(e).split())}"
        if line is None:
            raise
        raise ConfigError(line) from None
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """One line when ``address`` is no Ray address (:func:`~mia_ray.preflight.check_address`) or nothing listens at
    its ``host:port`` / ``ray://host:port``: ray.init itself retries an unreachable GCS for minutes (measured: still
    waiting after 2 min) before a multi-line error."""
    hostport = check_address(address)
    if hostport is None:  # "auto", "local", a client module's scheme: Ray resolves them
        return
    try:
        with socket.create_connection(hostport, timeout=timeout_s):
            return
    except OSError as e:
        raise ConfigError(
            f"--address {address} (or RAY_ADDRESS): no Ray cluster answers there ({e.strerror or e}); start one "
            f"(`ray start --head` or `ray up cluster/aws.yaml`) or run without --address for a local Ray"
        ) from None


def version_mismatch_line(message: str, address: str | None) -> str | None:
    """One line for Ray's multi-line "Version mismatch" refusal (driver and cluster must run the same Ray)."""
    if "Version mismatch" not in message:
        return None
    found = re.findall(r"Ray: (\S+)\s+Python: (\S+)", message)
    if len(found) < 2:
        return None
    (ray_c, py_c), (ray_l, py_l) = found[:2]
    what = f"Ray {ray_c}" if ray_c != ray_l else f"Python {py_c}"
    mine = f"Ray {ray_l}" if ray_c != ray_l else f"Python {py_l}"
    return (
        f"--address {address}: the cluster runs {what} but this machine runs {mine}; install the cluster's "
        f"version here (cluster/aws.yaml pins Ray), or submit with `ray job submit` so the driver runs on the head"
    )


def cluster_view(connected: bool) -> ClusterView:
    """The cluster's resources, live nodes and (when ``connected`` to an existing cluster) the node types
    its autoscaler may launch, for the pure checks in ``preflight``."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    view = ClusterView(dict(ray.cluster_resources()), nodes, connected=connected)
    if not connected:
        return view
    types, source, same_host = _node_types_from_gcs()
    if not types:
        cfg = _head_bootstrap_config(nodes)
        if cfg is not None:
            types, source = node_types_from_cluster_yaml(cfg), f"{BOOTSTRAP_CONFIG} on the head"
            same_host = (cfg.get("provider") or {}).get("type") in SAME_HOST_PROVIDERS
    view.node_types, view.node_types_from, view.types_share_host = types, source, same_host
    return view


def _node_types_from_gcs() -> tuple[list, str, bool]:
    """Node groups the autoscaler reported to the GCS (autoscaler v2, KubeRay); none with the v1 autoscaler
    that `ray up` runs (measured on Ray 2.58: the GCS cluster config stays empty)."""
    try:
        import ray._private.state

        cfg = ray._private.state.state.get_cluster_config()
    except Exception as e:  # a private API: absent or changed in another Ray release
        log.debug("no cluster config in the GCS: %s", e)
        return [], "", False
    if cfg is None:
        return [], "", False
    types = [
        NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, g.max_count if g.max_count >= 0 else 2**31)
        for g in cfg.node_group_configs
        if g.max_count != 0
    ]
    return types, "the GCS cluster config", False


def _head_bootstrap_config(nodes: list) -> dict | None:
    """The cluster-launcher config on the head node, read by a zero-CPU task pinned there (the head of
    cluster/aws.yaml has CPU 0), so it works from a laptop as from a job driver on the head."""
    head = next((n["NodeID"] for n in nodes if "node:__internal_head__" in n.get("Resources", {})), None)
    if head is None:
        return None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def read_bootstrap() -> str | None:
        path = os.path.expanduser(BOOTSTRAP_CONFIG)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return f.read()

    ref = read_bootstrap.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
    try:
        text = ray.get(ref, timeout=120)
        return yaml.safe_load(text) if text else None
    except Exception as e:  # unreadable or unparsable: preflight then says the node types are unknown
        ray.cancel(ref, force=True)
        log.warning("could not read %s on the head: %s", BOOTSTRAP_CONFIG, str(e).splitlines()[0])
        return None
