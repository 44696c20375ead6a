"""Utility of one stored target, measured once and kept in the target store beside it.

``get_or_measure`` returns the target's utility record: FD / KID (``sample_quality``) of ``samples`` DDIM
samples (seed 0 for every target, so targets are compared on the same initial noise) against the held-out
images (``mia_ray.canaries.heldout_ids``) on the pool's feature net (``get_or_train_features``), plus the PNG
grid of the first 64 samples. The record lives at ``<store>/utility/<target_id>-<key>.{json,png}``; ``<key>``
hashes the utility settings, the held-out ids and the feature net, so a resumed sweep finds it (never measured
twice) and other settings get their own record. Target ids are untouched. JSON last (it marks completeness):
on a local path each file is renamed into place, on an object store each is one PUT.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pyarrow.fs as pafs

from ..config import TargetSpec, UtilityConfig
from ..results import filesystem, write_bytes_atomic
from ..store_temps import clear_abandoned, owner_tag

FORMAT = "mia_ray.utility/1"
SAMPLE_SEED = 0  # the DDIM initial noise of every target (same for all: a paired comparison)


def utility_key(target_id: str, cfg: UtilityConfig, heldout: np.ndarray, feature_key: str) -> str:
    held = hashlib.sha256(np.ascontiguousarray(heldout, dtype=np.int64).tobytes()).hexdigest()
    blob = json.dumps({"format": FORMAT, "target_id": target_id, "samples": cfg.samples, "seed": SAMPLE_SEED,
                       "sampler_steps": cfg.sampler_steps, "heldout": held, "features": feature_key},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _paths(store: str, target_id: str, key: str) -> tuple[pafs.FileSystem, str, str]:
    fs, base = filesystem(store)
    stem = f"{base}/utility/{target_id}-{key}"
    return fs, f"{stem}.json", f"{stem}.png"


def _clear_temps(store: str, target_id: str, key: str) -> None:
    """Remove the record's temporaries (``.<target>-<key>.{json,png}.<hex>[-<writer>].tmp``) left by a writer
    killed before its rename (``mia_ray.store_temps``: at once when that process is gone, else once stale)."""
    fs, meta_path, _ = _paths(store, target_id, key)
    if isinstance(fs, pafs.LocalFileSystem):
        stem = os.path.basename(meta_path)[: -len(".json")]
        own = re.compile(rf"\.{re.escape(stem)}\.(json|png)\.[0-9a-f]{{32}}(-p\d+@.+)?\.tmp")
        clear_abandoned(os.path.dirname(meta_path), own)


def heldout_of(spec: TargetSpec, cfg: UtilityConfig, heldout_from: int, source=None) -> tuple[np.ndarray, object]:
    """(held-out ids, the opened pool) of ``spec``: at most ``cfg.heldout``, members of no target. ``source``:
    ``spec.data`` already opened (else it is opened here)."""
    from ..canaries import heldout_count, heldout_ids
    from ..data import open_source

    source = open_source(spec.data) if source is None else source
    m = spec.canaries.m if spec.canaries is not None else 0
    count = heldout_count(len(source), heldout_from, cfg.heldout, m)
    return heldout_ids(spec, len(source), heldout_from, count), source


def _stored_key(spec: TargetSpec, target_id: str, cfg: UtilityConfig, heldout_from: int, source=None) -> str:
    from .features import FeatureConfig, feature_key

    held, source = heldout_of(spec, cfg, heldout_from, source)
    return utility_key(target_id, cfg, held, feature_key(spec.data, len(source), FeatureConfig()))


def stored(store: str, target, cfg: UtilityConfig, heldout_from: int) -> dict | None:
    """The stored utility record of ``target`` (with ``grid_png`` bytes), or None when not measured yet."""
    return _read(store, target.target_id, _stored_key(target.spec, target.target_id, cfg, heldout_from))


def is_measured(store: str, spec: TargetSpec, target_id: str, cfg: UtilityConfig, heldout_from: int,
                source=None) -> bool:
    """Whether the utility record of target ``target_id`` (of ``spec``) is complete in ``store`` (its JSON);
    ``source``: ``spec.data`` already opened."""
    fs, meta, _ = _paths(store, target_id, _stored_key(spec, target_id, cfg, heldout_from, source))
    return fs.get_file_info(meta).type == pafs.FileType.File


def _read(store: str, target_id: str, key: str) -> dict | None:
    fs, meta, png = _paths(store, target_id, key)
    if fs.get_file_info(meta).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(meta) as f:
        record = json.loads(f.read().decode())
    with fs.open_input_stream(png) as f:
        record["grid_png"] = f.read()
    return record


def get_or_measure(store: str, target, cfg: UtilityConfig, heldout_from: int, device=None) -> dict:
    """The utility record of ``target`` (a stored ``Target``): read from the store, or measured and stored.

    Keys: fd, kid, kid_std, n_samples, n_heldout, sampler_steps, features (``<objective>/<feature key>``),
    sample_seconds, distance_seconds, key, grid_png (PNG bytes).
    """
    import tempfile

    import torch

    from ..families import make_family
    from ..models import pick_device
    from .features import get_or_train_features
    from .quality import features_of, sample_quality

    held, source = heldout_of(target.spec, cfg, heldout_from)
    net = get_or_train_features(store, target.spec.data)
    key = utility_key(target.target_id, cfg, held, net.meta["key"])
    _clear_temps(store, target.target_id, key)
    found = _read(store, target.target_id, key)
    if found is not None:
        return found
    device = torch.device(device) if device is not None else pick_device()
    images = source.load(held)
    with tempfile.TemporaryDirectory() as tmp:
        grid = os.path.join(tmp, "grid.png")
        out = sample_quality(target.load(device), make_family(target.spec.family), cfg.samples, images, net,
                             seed=SAMPLE_SEED, num_steps=cfg.sampler_steps, device=device,
                             heldout_features=features_of(net, images), grid_path=grid)
        with open(grid, "rb") as f:
            png = f.read()
    record = {**out, "features": f"{net.meta['objective']}/{net.meta['key']}", "key": key, "format": FORMAT,
              "target_id": target.target_id}
    fs, meta_path, png_path = _paths(store, target.target_id, key)
    write_bytes_atomic(fs, png_path, png, owner_tag())
    write_bytes_atomic(fs, meta_path, json.dumps(record, indent=1, sort_keys=True).encode(),
                       owner_tag())  # last: marks completeness
    return {**record, "grid_png": png}


__all__ = ["get_or_measure", "heldout_of", "is_measured", "stored", "utility_key"]
