"""Ray Data scoring: a thin actor around the pure ``score_batch``, over an actor pool."""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pyarrow as pa
import ray
import torch

from ..attacks import DiffusionAdapter, score_batch
from ..config import spec_from_json
from ..families import make_family
from ..models import pick_device
from ..training import TargetStore


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register extra attacks, families or data sources."""
    for m in modules:
        importlib.import_module(m)


class Scorer:
    """Ray Data UDF: ``__init__`` loads the target from the store, ``__call__`` scores a batch."""

    def __init__(self, store_root: str, spec_json: str, attacks: list, threads: int, plugins: list[str]):
        torch.set_num_threads(max(1, threads))  # Ray sets OMP_NUM_THREADS to num_cpus; be explicit
        import_plugins(plugins)
        spec = spec_from_json(spec_json)
        target = TargetStore(store_root).get(spec)
        if target is None:
            raise RuntimeError(f"target {spec.target_id} is not in the store {store_root}")
        device = pick_device()
        self.adapter = DiffusionAdapter(make_family(spec.family), target.load(device), amp=True)
        self.attacks = attacks
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        out = score_batch(self.adapter, batch, self.attacks)
        out["node_id"] = np.full(len(out["sample_id"]), self.node, dtype=object)
        return out


def score_with_ray(
    store_root: str, spec_json: str, attacks: list, rows: dict, resources, plugins: list[str] = ()
) -> tuple[dict, set]:
    """Score ``rows`` on an actor pool; returns (long-format score columns, node ids of the scorers)."""
    n = len(rows["sample_id"])
    items = [{k: v[i] for k, v in rows.items()} for i in range(n)]
    actors = resources.scorer_actors
    blocks = max(1, min(n, actors * 4, -(-n // resources.batch_size) * 2))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    scored = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "store_root": store_root,
            "spec_json": spec_json,
            "attacks": attacks,
            "threads": int(max(1, resources.scorer_cpus)),
            "plugins": list(plugins),
        },
        batch_size=resources.batch_size,
        batch_format="numpy",
        num_cpus=resources.scorer_cpus,
        num_gpus=resources.scorer_gpus,
        # start all actors at once: grown on demand, the pool adds one actor only after the running ones are
        # busy, so a trial shorter than a few actor start-ups ran on one actor; min 1 survives a lost node
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
    )
    tables = [t for t in ray.get(scored.to_arrow_refs()) if t.num_rows]
    table = pa.concat_tables(tables) if tables else None
    if table is None:
        raise RuntimeError("scoring produced no rows")
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    nodes = set(cols.pop("node_id").tolist())
    logging.getLogger("mia_ray").info(
        "scored %d samples -> %d rows on %d node(s)", n, table.num_rows, len(nodes)
    )
    return cols, nodes
