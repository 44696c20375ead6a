"""Ray Data scoring: many models over the same samples, with no start-up per model.

One Data pass scores several models (a target and its LiRA references): its rows are (model index, sample),
model-major, and each batch is split by model and handed to the pure ``score_batch``. The UDF is a *function*,
so Ray Data runs it as tasks on Ray's pooled worker processes, which Ray keeps and reuses across tasks, trials
and models of a sweep (``session.LOCAL_SYSTEM_CONFIG`` keeps idle workers for 10 minutes); each worker keeps a
bounded LRU cache of loaded models keyed by store and target id. A per-trial actor pool (the previous design)
paid ~5 s of actor start-up per trial on an idle 2-core box, 10-20 s on a loaded one (benchmarks/scoring.py).
Ray Data still shards the rows over the workers, and a task lost with its worker or node is retried.
GPU tasks default to ``max_calls=1`` (a fresh worker per task, which would drop the cache): we pass 0.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os

import numpy as np
import pyarrow as pa
import ray
import torch

from ..attacks import DiffusionAdapter, score_batch
from ..config import spec_from_json
from ..families import make_family
from ..models import pick_device
from ..training import TargetStore

# Models a worker keeps loaded (target + references of a trial fit at the default R = 8 with room for the next
# trial's target); a tiny digits UNet is ~2.5 MB, a 64x64 paper UNet ~150 MB.
CACHE_SIZE = int(os.environ.get("MIA_RAY_MODEL_CACHE", "12"))
_MODELS: collections.OrderedDict = collections.OrderedDict()  # (store root, target id) -> DiffusionAdapter


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register extra attacks, families or data sources."""
    for m in modules:
        importlib.import_module(m)


def cached_adapter(store_root: str, spec_text: str) -> DiffusionAdapter:
    """The model of ``spec_text`` from this worker's LRU cache, loaded from the store on a miss."""
    spec = spec_from_json(spec_text)
    key = (store_root, spec.target_id)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return _MODELS[key]
    target = TargetStore(store_root).get(spec)
    if target is None:
        raise RuntimeError(f"target {spec.target_id} is not in the store {store_root}")
    adapter = DiffusionAdapter(make_family(spec.family), target.load(pick_device()), amp=spec.model.bf16)
    _MODELS[key] = adapter
    while len(_MODELS) > max(1, CACHE_SIZE):
        _MODELS.popitem(last=False)
    return adapter


def score_models_batch(batch: dict, store_root: str, models: list, threads: int, plugins: list) -> dict:
    """Ray Data UDF: score a batch of (model, sample) rows, model by model; adds ``model`` and ``node_id``."""
    torch.set_num_threads(max(1, threads))  # Ray sets OMP_NUM_THREADS to num_cpus; be explicit
    import_plugins(plugins)
    model = np.asarray(batch["model"])
    parts = []
    for m in np.unique(model):  # rows are model-major: a batch spans one model, or two at a boundary
        keep = model == m
        spec_text, attacks = models[int(m)]
        sub = {k: np.asarray(v)[keep] for k, v in batch.items() if k != "model"}
        out = score_batch(cached_adapter(store_root, spec_text), sub, attacks)
        out["model"] = np.full(len(out["sample_id"]), int(m), dtype=np.int64)
        parts.append(out)
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cols["node_id"] = np.full(len(cols["sample_id"]), ray.get_runtime_context().get_node_id(), dtype=object)
    return cols


def score_models_with_ray(
    store_root: str, models: list[tuple[str, list]], rows: dict, resources, plugins: list[str] = ()
) -> tuple[list[dict], set]:
    """Score ``rows`` with each (spec JSON, attacks) of ``models`` in ONE Ray Data pass; returns (per model,
    long-format score columns) and the node ids of the workers that scored."""
    n = len(rows["sample_id"])
    items = [{"model": m, **{k: v[i] for k, v in rows.items()}} for m in range(len(models)) for i in range(n)]
    workers = resources.scorer_actors
    total = len(items)
    blocks = max(1, min(total, workers * 4 * len(models), -(-total // resources.batch_size) * 2))
    gpus = resources.scorer_gpus or 0
    # One map operator: Ray Data's per-operator resource reservation (built to share a cluster between the
    # operators of a pipeline) only held its tasks back. With it, a 2-worker pass ran its first tasks one at a time
    # (benchmarks/scaling.py: 2 workers 0.98x one worker; docs/bench_scaling.md); without it both start at once.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = False
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    scored = ds.map_batches(
        score_models_batch,
        fn_kwargs={
            "store_root": store_root,
            "models": list(models),
            "threads": int(max(1, resources.scorer_cpus)),
            "plugins": list(plugins),
        },
        batch_size=resources.batch_size,
        batch_format="numpy",
        num_cpus=resources.scorer_cpus,
        num_gpus=gpus,
        compute=ray.data.TaskPoolStrategy(size=workers),
        # keep the worker (and its model cache) after the task: Ray's default for GPU tasks is 1 call per worker
        max_calls=0,
    )
    tables = [t for t in ray.get(scored.to_arrow_refs()) if t.num_rows]
    if not tables:
        raise RuntimeError("scoring produced no rows")
    table = pa.concat_tables(tables)
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    nodes = set(cols.pop("node_id").tolist())
    model = cols.pop("model")
    order = _input_order(np.asarray(rows["sample_id"]), np.asarray(cols["sample_id"]), model, len(models))
    per_model = [{k: v[order[m]] for k, v in cols.items()} for m in range(len(models))]
    logging.getLogger("mia_ray").info(
        "scored %d samples x %d model(s) -> %d rows on %d node(s)", n, len(models), table.num_rows, len(nodes)
    )
    return per_model, nodes


def _input_order(ids: np.ndarray, scored_ids: np.ndarray, model: np.ndarray, n_models: int) -> list[np.ndarray]:
    """Per model, the indices of its scored rows with samples in the order of ``ids`` (the pass's input), each
    sample's rows in the order its batch produced them. Ray Data hands blocks back as tasks finish, so without
    this the rows came in an order set by scheduling, and sums over samples (LiRA's pooled variance) differed in
    the last bits (1e-14) between runs of one sweep."""
    sorter = np.argsort(ids, kind="stable")
    position = sorter[np.searchsorted(ids, scored_ids, sorter=sorter)]
    out = []
    for m in range(n_models):
        idx = np.flatnonzero(model == m)
        out.append(idx[np.argsort(position[idx], kind="stable")])
    return out


def score_with_ray(
    store_root: str, spec_json: str, attacks: list, rows: dict, resources, plugins: list[str] = ()
) -> tuple[dict, set]:
    """Score ``rows`` with one model; returns (long-format score columns, node ids of the scorers)."""
    per_model, nodes = score_models_with_ray(store_root, [(spec_json, attacks)], rows, resources, plugins)
    return per_model[0], nodes
