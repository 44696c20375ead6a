"""Connect to a Ray cluster, or start a local one tuned for sweeps."""

from __future__ import annotations

import contextlib

import ray

from ..preflight import ClusterView

# A local Ray keeps idle task workers alive, so the next training task reuses a worker that has already
# imported torch + diffusers. With Ray's defaults (soft limit = CPU count, idle workers killed after 1 s) each
# of the quickstart's 12 training tasks started a fresh worker and paid ~7-10 s of imports (measured: 12
# distinct training pids; with these settings: one per concurrent slot).
LOCAL_SYSTEM_CONFIG = {"num_workers_soft_limit": 16, "idle_worker_killing_time_threshold_ms": 600_000}


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, log_to_driver: bool = True):
    """Yield with Ray initialised: join ``address``, else start a local Ray; shut down only what we started.
    ``log_to_driver=False`` keeps the workers' output in Ray's log files (the sweep's quiet console)."""
    if ray.is_initialized():
        yield
        return
    local = {} if address else {"num_cpus": num_cpus, "_system_config": LOCAL_SYSTEM_CONFIG}
    # address "local": a new local Ray. With None, ray.init joins any cluster that `ray start` left running on
    # this machine (and then refuses num_cpus with a traceback): the sweep's default is its own local Ray.
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=log_to_driver,
             configure_logging=False, **local)
    try:
        yield
    finally:
        ray.shutdown()


def cluster_view() -> ClusterView:
    """The connected cluster's total resources and live nodes (for the pure checks in ``preflight``)."""
    return ClusterView(dict(ray.cluster_resources()), [n for n in ray.nodes() if n.get("Alive")])
