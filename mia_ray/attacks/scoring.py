"""Score one batch with every requested attack and step: the pure call behind the Ray actor."""

from __future__ import annotations

import numpy as np
import torch

from ..config import AttackSpec
from .base import ATTACKS, ModelAdapter

__all__ = ["AttackSpec", "score_batch"]  # AttackSpec lives in mia_ray.config (re-exported here)


def score_batch(adapter: ModelAdapter, batch: dict, attacks: list[AttackSpec]) -> dict[str, np.ndarray]:
    """Long-format scores of a batch (``image``, ``sample_id``, ``is_member``, optional ``rank``).

    Returns columns sample_id, is_member, attack, step (objects: an int, or None for a step-free attack),
    score, statistic, probe_se (the standard error of a Monte-Carlo statistic over its probes; NaN otherwise).
    """
    images = torch.from_numpy(np.array(batch["image"], dtype=np.float32))  # copies: Ray's arrays are read-only
    ids = torch.from_numpy(np.array(batch["sample_id"], dtype=np.int64))
    member = np.asarray(batch["is_member"], dtype=bool)
    rank = np.asarray(batch.get("rank", np.zeros(len(ids), dtype=np.int64)))
    names = ("sample_id", "is_member", "attack", "step", "score", "statistic", "probe_se")
    cols: dict[str, list] = {k: [] for k in names}
    for spec in attacks:
        keep = np.ones(len(ids), bool) if spec.max_samples is None else rank < spec.max_samples
        if not keep.any():
            continue
        sel = torch.from_numpy(np.flatnonzero(keep))
        out = ATTACKS.get(spec.name)().run(adapter, images[sel], ids[sel], spec.params)
        for i, step in enumerate(out.steps):
            n = len(sel)
            cols["sample_id"].append(ids[sel].numpy())
            cols["is_member"].append(member[keep])
            cols["attack"].append(np.full(n, spec.name, dtype=object))
            cols["step"].append(np.full(n, step, dtype=object))
            cols["score"].append(np.asarray(out.score[i], dtype=np.float64))
            cols["statistic"].append(np.asarray(out.statistic[i], dtype=np.float64))
            se = out.extra.get("probe_se")
            cols["probe_se"].append(np.full(n, np.nan) if se is None else np.asarray(se[i], dtype=np.float64))
    empty = {"attack": object, "step": object, "sample_id": np.int64, "is_member": bool}
    return {
        k: np.concatenate(v) if v else np.array([], dtype=empty.get(k, np.float64))
        for k, v in cols.items()
    }
