"""One trial, Ray-free: target -> evaluation samples -> scores -> metrics -> Parquet.

The Ray layer (``mia_ray.distributed``) calls the same pieces, replacing only how batches are scored;
``run_trial`` runs everything in-process (tests, users without a cluster).
"""

from __future__ import annotations

import math

import numpy as np

from . import results
from .attacks import DiffusionAdapter, score_batch
from .attacks.scoring import NO_STEP
from .config import spec_json
from .data import make_split, open_source
from .families import make_family
from .metrics import summarize
from .sweep_config import Trial
from .training import Target, TargetStore


def eval_samples(trial: Trial) -> tuple[dict, object]:
    """The rows to score (image, sample_id, is_member, rank) and the split they come from."""
    spec = trial.spec
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
    """Write the trial's scores, split, target and (last) metrics atomically; returns the metric rows."""
    spec, tid = trial.spec, trial.trial_id
    base = {"sweep": sweep, "trial_id": tid, "target_id": target.target_id}
    step = np.asarray(scores["step"])
    results.write_trial_table(
        root,
        "scores",
        tid,
        [
            {
                **base,
                "sample_id": int(s),
                "is_member": bool(m),
                "attack": str(a),
                "step": None if st == NO_STEP else int(st),
                "score": float(sc),
                "statistic": float(x),
            }
            for s, m, a, st, sc, x in zip(
                scores["sample_id"],
                scores["is_member"],
                scores["attack"],
                step,
                scores["score"],
                scores["statistic"],
                strict=True,
            )
        ],
    )
    dataset = spec.data.source if not spec.data.path else f"{spec.data.source}:{spec.data.path}"
    eval_m, eval_n = set(split.eval_members.tolist()), set(split.nonmembers.tolist())
    results.write_trial_table(
        root,
        "splits",
        tid,
        [
            {
                **base,
                "dataset": dataset,
                "seed": spec.seed,
                "sample_id": int(i),
                "is_member": m,
                "in_eval": int(i) in (eval_m if m else eval_n),
            }
            for ids, m in ((split.members, True), (split.nonmembers, False))
            for i in ids
        ],
    )
    meta = target.meta
    eps_spent = meta["epsilon_spent"]
    results.write_trial_table(
        root,
        "targets",
        tid,
        [
            {
                **base,
                "family": spec.family.name,
                "dataset": dataset,
                "train_size": spec.train_size,
                "seed": spec.seed,
                "epsilon": spec.dp.epsilon,
                "epsilon_spent": _num(eps_spent),
                "delta": spec.dp.delta,
                "noise_multiplier": _num(meta["noise_multiplier"]),
                "max_grad_norm": spec.dp.max_grad_norm,
                "train_steps": int(meta["train_steps"]),
                "batch_size": spec.train.batch_size,
                "final_loss": _num(meta["final_loss"]),
                "train_seconds": float(meta["train_seconds"]),
                "params": int(meta["params"]),
                "checkpoint": target.checkpoint,
                "spec_json": spec_json(spec),
            }
        ],
    )
    rows = []
    attack = np.asarray(scores["attack"]).astype(str)
    for a in dict.fromkeys(attack):
        for st in sorted(set(step[attack == a].tolist())):
            sel = (attack == a) & (step == st)
            m = summarize(
                np.asarray(scores["score"])[sel],
                np.asarray(scores["is_member"])[sel],
                n_boot=n_boot,
                seed=spec.seed,
            )
            rows.append(
                {
                    **base,
                    "family": spec.family.name,
                    "dataset": dataset,
                    "train_size": spec.train_size,
                    "eval_size": trial.eval_size,
                    "epsilon": spec.dp.epsilon,
                    "epsilon_spent": _num(eps_spent),
                    "seed": spec.seed,
                    "attack": a,
                    "step": None if st == NO_STEP else int(st),
                    **m,
                }
            )
    results.write_trial_table(root, "metrics", tid, rows)  # last: its presence marks the trial complete
    return rows


def _num(x) -> float:
    """A stored statistic as a float (NaN when absent)."""
    return float(x) if x is not None else math.nan


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
    """Train (if needed), score in-process and write one trial's results."""
    rows, split = eval_samples(trial)
    target = store.get_or_train(trial.spec, device=device, progress=progress)
    scores = score_in_process(target, trial, rows, batch_size, device)
    return write_results(root, sweep, trial, target, split, scores, n_boot)


def summary_line(metric_rows: list) -> dict:
    """Best AUC per attack (over steps) of one trial, for Tune and the final table."""
    best = {}
    for r in metric_rows:
        a = r["attack"]
        if a not in best or r["auc"] > best[a]["auc"]:
            best[a] = {
                "step": r["step"],
                "auc": r["auc"],
                "tpr_at_1pct_fpr": r["tpr_at_1pct_fpr"],
                "tpr_at_10pct_fpr": r["tpr_at_10pct_fpr"],
            }
    return best


__all__ = ["eval_samples", "score_in_process", "write_results", "run_trial", "summary_line"]
