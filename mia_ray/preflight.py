"""Checks that need the data or the cluster, run after config validation and before any compute."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import re
from dataclasses import dataclass, field, replace

from .data import SOURCES
from .data.split import check_fits_pool
from .errors import ConfigError, DataError

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "beegfs", "gpfs", "ceph", "glusterfs", "efs", "9p")


@contextlib.contextmanager
def warnings_after_checks(logger: str = "mia_ray"):
    """Hold the warnings ``logger`` emits inside the block; print them (each distinct one once) only when the block
    passes. A refusal is then the one line it should be: given sets with in-set copies printed four warning lines
    (two per set, the same lines twice for one file) before the error that refused them. A record logged with
    ``extra={"now": True}`` (a line announcing a long wait) passes at once."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if getattr(record, "now", False):
            return True
        held.append(record)
        return False

    log = logging.getLogger(logger)
    log.addFilter(hold)
    try:
        yield
    finally:
        log.removeFilter(hold)
    seen = set()
    for record in held:  # reached only when the block raised nothing
        if record.getMessage() not in seen:
            seen.add(record.getMessage())
            log.handle(record)


def check_data(cfg) -> None:
    """The data source opens and its pool holds the largest training set plus the non-members (warnings of the
    door printed only once every check has passed: :func:`warnings_after_checks`)."""
    with warnings_after_checks():
        _check_data(cfg)


def _check_data(cfg) -> None:
    from .door import check_inputs, given_membership, open_pool  # issue 14: pool content + model.pretrained

    try:
        source = open_pool(cfg)
    except DataError as e:
        hint = ""
        if SOURCES.get(cfg.data.source).needs_path and not given_membership(cfg):
            hint = " (prepare the images as described in README 'Data', then set data.path=...)"
        msg = str(e) if str(e).startswith("data.") else f"data.path: {e}"  # "x.npy: dtype int64 ..." named no key
        raise DataError(f"{msg}{hint}") from None
    if not given_membership(cfg):  # given members: the pool is the user's two sets, nothing to carve from it
        from .sweep_config import check_pool  # issue 13: canaries and utility held-out images fit the pool

        check_fits_pool(len(source), max(cfg.train_sizes), cfg.eval_size, source.describe(),
                        key="train_sizes/eval_size: max(train_sizes) + eval_size")
        check_pool(cfg, len(source))
        check_canary_budgets(cfg, len(source))
    check_reference_pool(cfg, None if given_membership(cfg) else len(source))
    check_inputs(cfg, source)
    if cfg.model.pretrained and not given_membership(cfg):  # allowed (e.g. a null check), but easy to misread
        logging.getLogger("mia_ray").warning(
            "model.pretrained with a split drawn from %s: its 'members' are the seed's draw, not what the model was "
            "trained on, so the attacks measure leakage only if it was trained on exactly those images; to audit "
            "it on its real training set give data.members and data.nonmembers (README: Audit a given model)",
            source.where())


def check_canary_budgets(cfg, pool_size: int) -> None:
    """With the canary audit a DP target trains on its members plus its included canaries, a count that depends
    on the pool and the seed: every finite ε must be reachable on that count (``dp.check_budget``), as the
    config's check does for targets without canaries."""
    if not getattr(getattr(cfg, "audit", None), "canaries", 0) or cfg.model.pretrained:
        return
    from .canaries import training_ids
    from .sweep_config import expand
    from .training.dp import check_budget

    checked = set()
    for trial in expand(cfg):
        spec = trial.spec
        if spec.canaries is None or not math.isfinite(spec.dp.epsilon):
            continue
        n = len(training_ids(spec, pool_size))
        if (spec.dp.epsilon, n) not in checked:
            checked.add((spec.dp.epsilon, n))
            check_budget(spec.dp.epsilon, spec.dp.delta, n, spec.train.batch_size, spec.train.steps,
                         spec.dp.accountant, images=f"train_size {spec.train_size} + {n - spec.train_size} "
                         f"included canaries (seed {spec.seed})")


def check_reference_pool(cfg, pool_size: int | None) -> None:
    """LiRA's reference models are trained with the target's recipe on halves of a universe of 2 x train_size
    pool images (``mia_ray.references``): not for a pretrained target (given membership needs one, so this
    holds on that path too), nor beside canaries (outside the universe: the write step could not calibrate
    their scores). ``pool_size`` None: given membership, no pool to carve the universe from."""
    refs = [a for a in cfg.attacks.values() if getattr(getattr(a, "params", None), "references", 0)]
    if refs and cfg.model.pretrained:
        raise ConfigError(
            f"attacks.{refs[0].name}: reference models are trained with the target's recipe, which a "
            "pretrained target (model.pretrained) does not have; allowed: targets trained by the sweep"
        )
    if refs and getattr(getattr(cfg, "audit", None), "canaries", 0):
        raise ConfigError(
            f"attacks.{refs[0].name}: reference models never train on the canaries (they lie outside the "
            f"reference universe), so their scores cannot be calibrated; allowed: audit.canaries: 0 with "
            f"{refs[0].name}, or the canary audit in a sweep without it"
        )
    if refs and pool_size is not None and 2 * max(cfg.train_sizes) > pool_size:
        raise ConfigError(
            f"attacks.{refs[0].name}.references: reference models need 2 x max(train_sizes) = "
            f"{2 * max(cfg.train_sizes)} pool images, the pool has {pool_size}; lower train_sizes"
        )


@dataclass(frozen=True)
class NodeType:
    """A kind of machine the autoscaler may launch: its Ray resources and how many of it at most."""

    name: str
    resources: dict
    max_workers: int


@dataclass
class ClusterView:
    """What preflight needs to know of a Ray cluster: what is up now and what the autoscaler may add.

    ``node_types`` are the worker types the autoscaler may launch (empty: none, or not known);
    ``node_types_from`` says where they were learned; ``connected`` is False for a local Ray started by the
    sweep itself (which never grows); ``types_share_host`` is True when launched nodes run on the head's
    machine (Ray's fake multi-node test provider), so they share its filesystem.
    """

    total: dict
    nodes: list  # ray.nodes() entries that are alive ("Resources", "NodeManagerAddress", ...)
    node_types: list = field(default_factory=list)
    node_types_from: str = ""
    connected: bool = False
    types_share_host: bool = False


def node_types_from_cluster_yaml(cfg: dict) -> list[NodeType]:
    """The worker types of a cluster-launcher config (``available_node_types`` less the head type)."""
    cap = int(cfg.get("max_workers", 2**31 - 1))
    out = []
    for name, t in (cfg.get("available_node_types") or {}).items():
        if name == cfg.get("head_node_type"):
            continue
        n = min(int(t.get("max_workers", cap)), cap)
        if n > 0:
            out.append(NodeType(name, {k: float(v) for k, v in (t.get("resources") or {}).items()}, n))
    return out


def node_types_from_setting(setting: dict) -> list[NodeType]:
    """``resources.node_types``: ``{name: {CPU: .., GPU: .., <custom>: .., max_workers: ..}}``."""
    out = []
    for name, t in setting.items():
        key = f"resources.node_types.{name}"
        if not isinstance(t, dict) or not t:
            raise ConfigError(f"{key} = {t!r}; allowed: a mapping such as {{CPU: 4, GPU: 1, max_workers: 8}}")
        for k, v in t.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:  # NaN, inf too
                raise ConfigError(f"{key}.{k} = {v!r}; allowed: a finite number >= 0")
        if int(t.get("max_workers", 1)) != t.get("max_workers", 1):
            raise ConfigError(f"{key}.max_workers = {t['max_workers']!r}; allowed: an integer >= 0")
        res = {k: float(v) for k, v in t.items() if k != "max_workers"}
        out.append(NodeType(str(name), res, int(t.get("max_workers", 1))))
    return out


def with_setting(cluster: ClusterView, r) -> ClusterView:
    """The view with ``resources.node_types`` (when set) as the node types: the user's word wins."""
    if not r.node_types:
        return cluster
    return replace(cluster, node_types=node_types_from_setting(r.node_types), node_types_from="resources.node_types")


def describe(cluster: ClusterView) -> str:
    """One line: the nodes up and the node types that may be added, and where those were learned."""
    up = f"{len(cluster.nodes)} node(s) up ({_fmt(cluster.total)})"
    if cluster.node_types:
        types = ", ".join(f"{t.name} x{t.max_workers} ({_fmt(t.resources)})" for t in cluster.node_types)
        how = "assumed from" if cluster.node_types_from == "resources.node_types" else "from"
        return f"  cluster: {up}; the autoscaler may add {types} [{how} {cluster.node_types_from}]"
    if cluster.connected:
        return f"  cluster: {up}; no autoscaling node types known (set resources.node_types if it autoscales)"
    return f"  cluster: local Ray, {up}"


def _fmt(res: dict) -> str:
    keys = ["CPU", "GPU"] + sorted(k for k in res if k not in ("CPU", "GPU") and _custom(k))
    return ", ".join(f"{k} {res.get(k, 0):g}" for k in keys)


def _custom(key: str) -> bool:
    """A user-level resource (not Ray's bookkeeping: memory, node:<ip>, accelerator_type:...)."""
    return key not in ("memory", "object_store_memory") and ":" not in key


def _machines(cluster: ClusterView) -> list[tuple[str, dict]]:
    """Every machine shape the sweep may get: the live nodes and the launchable node types."""
    live = [(f"node {n.get('NodeManagerAddress', '?')}", n["Resources"]) for n in cluster.nodes]
    return live + [(f"node type {t.name}", t.resources) for t in cluster.node_types]


def _capacity(cluster: ClusterView, key: str) -> float:
    """``key`` summed over the live nodes and every node type at its max_workers (the most there can be)."""
    return cluster.total.get(key, 0) + sum(t.resources.get(key, 0) * t.max_workers for t in cluster.node_types)


def resolve_resources(r, cluster: ClusterView):
    """A copy of ``r`` (config ``Resources``) with the ``null`` (auto) keys filled from the cluster.

    GPUs: 1 when a GPU node is up or the autoscaler may launch one, 0 on a cluster that has and can get none;
    refused when connected to a cluster whose node types are unknown and that has no GPU up (it may be an
    autoscaling GPU cluster). ``max_concurrent_trials``: as many as keep every GPU (else CPU) busy when
    the cluster is at its largest.
    """
    cluster = with_setting(cluster, r)
    gpus, cpus = _capacity(cluster, "GPU"), _capacity(cluster, "CPU")
    autos = [k for k in ("scorer_gpus", "train_gpus") if getattr(r, k) is None]
    if autos and not gpus and cluster.connected and not cluster.node_types:
        raise ConfigError(
            f"resources.{autos[0]} = null (auto) cannot be resolved: the cluster has no GPU node up and its "
            "node types are unknown; set resources.scorer_gpus and resources.train_gpus (e.g. 1, or 0 for "
            "CPU only), or resources.node_types"
        )
    out = replace(r)
    if out.scorer_gpus is None:
        out.scorer_gpus = 1.0 if gpus >= 1 else 0.0
    if out.train_gpus is None:
        out.train_gpus = 1.0 if gpus >= 1 else 0.0
    if out.max_concurrent_trials is None:
        if gpus >= 1 and (out.scorer_gpus or out.train_gpus):
            per_trial = max(out.scorer_actors * out.scorer_gpus, out.train_gpus)
            out.max_concurrent_trials = max(1, int(gpus // per_trial))
        else:
            need = max(out.train_cpus, out.scorer_actors * out.scorer_cpus)
            out.max_concurrent_trials = max(1, int(max(cpus, 1) // need))
    return out


def check_resources(r, cluster: ClusterView) -> None:
    """Refuse per-task resources that no live node and no launchable node type can ever hold (they would hang)."""
    cluster = with_setting(cluster, r)
    machines = _machines(cluster)
    for role in ("scorer", "train"):
        bundle = {"CPU": getattr(r, f"{role}_cpus"), "GPU": getattr(r, f"{role}_gpus") or 0}
        if any(all(res.get(k, 0) >= v for k, v in bundle.items()) for _, res in machines):
            continue
        # name the first key no machine can hold; when each fits somewhere but never together, both
        short = [k for k, v in bundle.items() if not any(res.get(k, 0) >= v for _, res in machines)][:1]
        asked = " with ".join(f"resources.{role}_{k.lower()}s = {bundle[k]:g}" for k in short or bundle)
        where, largest = max(machines, key=lambda m: (m[1].get("GPU", 0), m[1].get("CPU", 0)), default=("-", {}))
        raise ConfigError(
            f"{asked} can never be satisfied: the largest is {where} with {_fmt(largest)}{_source(cluster)}"
        )


def check_local_cpus(r) -> None:
    """A sweep without --address starts a local Ray of ``resources.num_cpus`` CPUs (else this machine's: Ray may
    count fewer, never more): a task asking for more can never run. Refused before Ray starts, where
    ``check_resources`` refused it only once Ray was up (GPUs: :func:`check_local_gpus`)."""
    have = r.num_cpus or os.cpu_count() or 1
    for key in ("scorer_cpus", "train_cpus"):
        if getattr(r, key) > have:
            where = "resources.num_cpus" if r.num_cpus else "this machine's CPU count"
            raise ConfigError(
                f"resources.{key} = {getattr(r, key):g} can never be satisfied: the local Ray has {have} CPU(s) "
                f"({where}); allowed: at most {have}, or --address of a cluster with larger nodes"
            )


def check_local_gpus(r, count: int | None = None) -> None:
    """A local Ray counts this machine's GPUs (the CUDA devices visible here, as torch counts them: ``count``
    None asks torch): a task asking for more can never run. Refused before Ray starts, where ``check_resources``
    refused it only once Ray was up. ``null`` (auto) resolves to what there is and is never refused."""
    asked = [(k, getattr(r, k)) for k in ("scorer_gpus", "train_gpus") if getattr(r, k)]
    if not asked:
        return
    if count is None:
        import torch  # only when GPUs are asked for: the sweep has imported it already

        count = torch.cuda.device_count()
    for key, v in asked:
        if v > count:
            raise ConfigError(
                f"resources.{key} = {v:g} can never be satisfied: the local Ray has {count} GPU(s) (the CUDA devices "
                f"torch sees on this machine); allowed: at most {count} (or null: 1 when there is a GPU, else 0), "
                "or --address of a cluster with GPU nodes"
            )


# host:port or ray://host:port (a bracketed IPv6 host too): what ray.init takes besides "auto" and "local"
ADDRESS = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[^\s\[\]/:@]+):(\d+)")


def check_address(address: str, label: str | None = None) -> tuple[str, int] | None:
    """The form of a Ray address (``--address``, else ``RAY_ADDRESS``), checked without contacting anything (also
    at --dry-run): ``auto``, ``local``, ``host:port`` of a Ray head or ``ray://host:port`` (Ray Client). Returns
    (host, port) for the two forms with a port. ray.init raised "Invalid address format" (a traceback) for
    ``nonsense`` once the data had been read, a dry run never looked, ``http://`` (the dashboard's) was a multi-line
    ValueError, a port past 65535 an OverflowError, and ``ray://head`` without a port dialled port 443. ``label``
    starts the error (default ``--address ADDRESS (or RAY_ADDRESS)``)."""
    if address in ("auto", "local"):
        return None
    m = ADDRESS.fullmatch(address)
    scheme = address.split("://", 1)[0] if "://" in address else None
    if scheme not in (None, "ray") and re.fullmatch(r"[A-Za-z_]\w*", scheme) and scheme not in ("http", "https"):
        if importlib.util.find_spec(scheme) is not None:  # ray.init's client of a module: <module>://...
            return None
    port = int(m.group(2)) if m else 0
    if m and 1 <= port <= 65535:
        return m.group(1).strip("[]"), port
    if scheme in ("http", "https"):
        hint = (" (that is the dashboard's HTTP address; Ray wants the head's GCS port, 6379 by default, or "
                "ray://host:10001)")
    elif m:
        hint = f" (port {port} is outside 1..65535)"
    else:
        hint = " (ray:// needs the Ray Client port, 10001 by default)" if scheme == "ray" else ""
    label = label or f"--address {address} (or RAY_ADDRESS)"
    raise ConfigError(
        f"{label}: not a Ray address{hint}; allowed: host:port of a Ray head (e.g. 10.0.0.5:6379), ray://host:port "
        "(Ray Client), auto (a cluster started on this machine) or local"
    )


def _source(cluster: ClusterView) -> str:
    if cluster.node_types:
        return f" (node types from {cluster.node_types_from})"
    if cluster.connected:
        return " (no autoscaling node types known: set resources.node_types if the cluster autoscales)"
    return ""


def check_writable(cfg) -> None:
    """The local results root and target store can be created here: the nearest existing folder on each path
    is a writable directory, and in an existing results root the tables are folders and sweep.yaml is not
    (remote ``scheme://`` paths are left to the run)."""
    from .results import SCHEMAS, folder_problem
    from .sweep_config import results_root, store_root

    for key, path in (("output", results_root(cfg)), ("store", store_root(cfg))):
        problem = None if "://" in path else folder_problem(path)
        if problem:
            raise ConfigError(f"{key}: {problem}")
    root = results_root(cfg)
    if "://" in root:
        return
    # metrics/ as a file passed (the root was writable): the trial failed writing its rows; grids/ as a file
    # failed writing the utility's sample grid, after training and scoring
    for entry, folder in [*((t, True) for t in (*SCHEMAS, "report", "grids")), ("sweep.yaml", False)]:
        path = os.path.join(root, entry)
        if os.path.exists(path) and os.path.isdir(path) != folder:
            kinds = ("a file", "a folder") if folder else ("a folder", "a file")
            raise ConfigError(f"output: {path} is {kinds[0]}, not {kinds[1]}; allowed: a results folder written by "
                              "this sweep (or give the sweep a new name or output)")


def check_remote(cfg) -> None:
    """A ``scheme://`` output or store opens (pyarrow knows the scheme; an S3 bucket's region resolves): an unknown
    scheme or an unreachable bucket was a traceback when the first file was written, after Ray had started.
    Not at --dry-run, which may plan offline."""
    import pyarrow as pa

    from .results import filesystem
    from .sweep_config import results_root, store_root

    for key, path in (("output", results_root(cfg)), ("store", store_root(cfg))):
        if "://" not in path:
            continue
        try:
            filesystem(path)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ConfigError(
                f"{key}: cannot open {path} ({' '.join(str(e).split())}); allowed: a local folder or a URI that "
                "pyarrow opens from here (s3://bucket/prefix, gs://bucket/prefix)"
            ) from None


def check_output(cfg, cluster: ClusterView) -> None:
    """When the cluster has, or may launch, more than one machine, results and the store must be shared."""
    cluster = with_setting(cluster, cfg.resources)
    hosts = {n["NodeManagerAddress"] for n in cluster.nodes}
    more = 0 if cluster.types_share_host else sum(t.max_workers for t in cluster.node_types)
    if len(hosts) + more < 2:
        return
    what = f"{len(hosts)} machine(s)" + (f" and may launch {more} more" if more else "")
    for key in ("output", "store"):
        path = getattr(cfg, key)
        if path and "://" not in path and not _on_network_fs(path):
            raise ConfigError(
                f"{key} = {path!r} is node-local but the cluster has {what}: results would be "
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
