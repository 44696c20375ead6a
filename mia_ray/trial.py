"""One trial, Ray-free: target -> evaluation samples -> scores -> tables (Parquet).

The Ray layer (``mia_ray.distributed.tuning``) calls the same steps, replacing only where the target is
trained (a task) and how batches are scored (Ray Data); :func:`run_trial` runs them all in this process
(tests, users without a cluster). The rows of each table are built in ``mia_ray.results``.
"""

from __future__ import annotations

import numpy as np

from . import results
from .attacks import DiffusionAdapter, score_batch
from .config import Trial
from .data import make_split, open_source
from .data.given import given_split
from .door import open_pool
from .families import make_family
from .steps import as_step, best_rows
from .training import Target, TargetStore, get_or_train


def eval_samples(trial: Trial) -> tuple[dict, object]:
    """The rows to score (image, sample_id, is_member, rank) and the split they come from."""
    spec = trial.spec
    if spec.data.members or spec.data.nonmembers:  # given membership (mia_ray/data/given.py)
        source = open_pool(spec)
        split = given_split(source, trial.eval_size, spec.seed)
    else:
        source = open_source(spec.data)
        split = make_split(len(source), spec.train_size, trial.eval_size, spec.seed, source.describe())
    ids = np.concatenate([split.eval_members, split.nonmembers]).astype(np.int64)
    is_member = np.r_[np.ones(len(split.eval_members), bool), np.zeros(len(split.nonmembers), bool)]
    rank = np.r_[np.arange(len(split.eval_members)), np.arange(len(split.nonmembers))].astype(np.int64)
    return {"image": source.load(ids), "sample_id": ids, "is_member": is_member, "rank": rank}, split


def score_in_process(target: Target, trial: Trial, rows: dict, batch_size: int = 64, device=None) -> dict:
    """Score all rows with every attack in this process, batch by batch (the reference path)."""
    unet = target.load(device or "cpu")
    adapter = DiffusionAdapter(make_family(trial.spec.family), unet, amp=True)
    parts = []
    for lo in range(0, len(rows["sample_id"]), batch_size):
        parts.append(
            score_batch(adapter, {k: v[lo : lo + batch_size] for k, v in rows.items()}, trial.attacks)
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def write_results(
    root: str, sweep: str, trial: Trial, target: Target, split, scores: dict, n_boot: int
) -> list:
    """Write the trial's four tables (metrics last, atomically file by file); returns the metric rows."""
    keys = results.trial_keys(sweep, trial.trial_id, target.target_id)
    tables = {
        "scores": results.score_rows(keys, scores),
        "splits": results.split_rows(keys, trial, split),
        "targets": results.target_rows(keys, trial, target.meta, target.checkpoint),
        "metrics": results.metric_rows(keys, trial, target.meta, scores, n_boot),
    }
    results.write_trial(root, trial.trial_id, tables)
    return tables["metrics"]


def run_trial(
    trial: Trial,
    sweep: str,
    root: str,
    store: TargetStore,
    n_boot: int = 200,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
) -> list:
    """The whole trial in this process: train (if not stored), score, write; returns the metric rows."""
    rows, split = eval_samples(trial)
    target = get_or_train(store, trial.spec, device=device, progress=progress)
    scores = score_in_process(target, trial, rows, batch_size, device)
    return write_results(root, sweep, trial, target, split, scores, n_boot)


def summary_line(metric_rows: list) -> dict:
    """Per attack of one trial: its best step (``mia_ray.steps.best_rows``), AUC and TPRs, for Tune."""
    import pandas as pd

    best = best_rows(pd.DataFrame(metric_rows), ["attack"])
    cols = ["step", "auc", "tpr_at_1pct_fpr", "tpr_at_10pct_fpr"]
    return {
        r["attack"]: {c: as_step(r[c]) if c == "step" else r[c] for c in cols}
        for r in best.to_dict("records")
    }


__all__ = ["eval_samples", "run_trial", "score_in_process", "summary_line", "write_results"]
