"""One trial, Ray-free: target -> evaluation samples -> scores -> tables (Parquet).

The Ray layer (``mia_ray.distributed.tuning``) calls the same steps, replacing only where the target is
trained (a task) and how batches are scored (Ray Data); :func:`run_trial` runs them all in this process
(tests, users without a cluster). The rows of each table are built in ``mia_ray.results``.
"""

from __future__ import annotations

import numpy as np

from . import results
from .attacks import ATTACKS, DiffusionAdapter, score_batch
from .attacks.lira import calibrate
from .canaries import canaries_of
from .config import AttackSpec, TargetSpec, Trial
from .data import make_split, open_source
from .data.given import given_split
from .door import open_pool
from .families import make_family
from .references import inclusion, reference_specs
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
    canary, included = canaries_of(spec, len(source))  # scored by every attack (rank 0), kept apart from metrics
    ids, is_member = np.r_[ids, canary].astype(np.int64), np.r_[is_member, included]
    rank = np.r_[rank, np.zeros(len(canary), np.int64)]
    return {"image": source.load(ids), "sample_id": ids, "is_member": is_member, "rank": rank}, split


def score_in_process(
    target: Target, trial: Trial, rows: dict, batch_size: int = 64, device=None, attacks=None
) -> dict:
    """Score all rows with every attack (or ``attacks``) in this process, batch by batch (the reference path)."""
    unet = target.load(device or "cpu")
    adapter = DiffusionAdapter(make_family(trial.spec.family), unet, amp=trial.spec.model.bf16)
    attacks = trial.attacks if attacks is None else attacks
    parts = []
    for lo in range(0, len(rows["sample_id"]), batch_size):
        parts.append(score_batch(adapter, {k: v[lo : lo + batch_size] for k, v in rows.items()}, attacks))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def reference_attacks(trial: Trial) -> list[AttackSpec]:
    """The trial's attacks that calibrate against reference models (``lira``): all a reference is scored by."""
    return [a for a in trial.attacks if getattr(ATTACKS.get(a.name), "needs_references", False)]


def trial_references(trial: Trial) -> list[TargetSpec]:
    """The reference-model specs the trial needs (none without a reference attack)."""
    return reference_specs(trial.spec, max((a.params.references for a in reference_attacks(trial)), default=0))


def calibrate_with_references(trial: Trial, scores: dict, references: list, pool_size: int) -> dict:
    """``scores`` with each reference attack's scores replaced by its calibrated ones (``attacks.lira``).

    ``references``: (Target, long-format score columns) of reference 0..R-1, in index order."""
    ref_attacks = reference_attacks(trial)
    if not ref_attacks:
        return scores
    out = dict(scores, score=np.array(scores["score"], dtype=np.float64, copy=True))
    attack = np.asarray(scores["attack"]).astype(str)
    step = np.array([as_step(s) for s in scores["step"]], dtype=object)
    sid = np.asarray(scores["sample_id"], np.int64)
    for spec in ref_attacks:
        r_count = spec.params.references
        for st in spec.params.steps:
            sel = np.flatnonzero((attack == spec.name) & (step == st))
            ids = sid[sel]
            ref_stat = np.stack([_aligned(cols, spec.name, st, ids) for _, cols in references[:r_count]])
            inc = inclusion(pool_size, trial.spec.train_size, trial.spec.seed, ids, r_count)
            out["score"][sel] = calibrate(np.asarray(scores["statistic"])[sel][None], ref_stat[:, None], inc,
                                          spec.params)[0]
    return out


def _aligned(cols: dict, attack: str, step: int, ids: np.ndarray) -> np.ndarray:
    """A reference's statistic of ``attack`` at ``step`` for sample ``ids``, in that order."""
    a = np.asarray(cols["attack"]).astype(str)
    st = np.array([as_step(s) for s in cols["step"]], dtype=object)
    sel = np.flatnonzero((a == attack) & (st == step))
    ids_here = np.asarray(cols["sample_id"], np.int64)[sel].tolist()
    by_id = dict(zip(ids_here, np.asarray(cols["statistic"])[sel], strict=True))
    return np.array([by_id[i] for i in ids.tolist()], dtype=np.float64)


def write_results(
    root: str, sweep: str, trial: Trial, target: Target, split, scores: dict, n_boot: int,
    utility: dict | None = None,
    references: list | None = None,
) -> list:
    """Write the trial's tables (metrics last, atomically file by file); returns the metric rows.

    ``utility``: the target's utility record (``mia_ray.utility.target``), written to targets/ and its grid to
    ``grids/``. ``references``: (Target, score columns) of the trial's reference models, index order, when it
    has any (``lira``). Canary rows of ``scores`` (issue 13) go to scores/ and canary_audit/, never into
    metrics/, calibrated/ or audit/."""
    keys = results.trial_keys(sweep, trial.trial_id, target.target_id)
    meta = {**target.meta, "utility": utility}
    scores = calibrate_with_references(trial, scores, references or [], split.pool_size)
    canary, included = canaries_of(trial.spec, split.pool_size)
    on_eval = ~np.isin(np.asarray(scores["sample_id"]).astype(np.int64), canary)
    eval_scores = {k: np.asarray(v)[on_eval] for k, v in scores.items()}
    halves = results.calibration_split(trial, split)
    tables = {
        "scores": results.mark_canaries(results.score_rows(keys, scores), canary),
        "splits": results.split_rows(keys, trial, split, halves)
        + results.canary_split_rows(keys, trial, canary, included),
        "targets": results.target_rows(keys, trial, meta, target.checkpoint),
        "metrics": results.metric_rows(keys, trial, meta, eval_scores, n_boot),
    }
    tables.update(calibrated_tables(keys, trial, meta, eval_scores, halves, n_boot))
    for row in tables["splits"]:
        row.setdefault("is_canary", False)
    if references:
        tables["references"] = results.reference_rows(keys, trial, [t.target_id for t, _ in references],
                                                      split.pool_size)
        names = {a.name for a in reference_attacks(trial)}
        tables["reference_scores"] = results.reference_score_rows(keys, references, names)
    if utility is not None:
        results.write_grid(root, trial.trial_id, utility["grid_png"])
    if len(canary):
        audit = results.canary_audit_rows(keys, trial, meta, scores, canary, included)
        results.write_trial_table(root, "canary_audit", trial.trial_id, audit)  # before metrics (completeness)
    results.write_trial(root, trial.trial_id, tables)
    return tables["metrics"]


def calibrated_tables(keys: dict, trial: Trial, meta: dict, scores: dict, halves: dict, n_boot: int) -> dict:
    """``calibrated/`` and ``audit/``: step and thresholds chosen on the calibration half, counted on the test
    half (``mia_ray.calibration``, ``mia_ray.audit``)."""
    vectors = results.attack_vectors(scores, halves)
    calibrated = results.calibrated_rows(keys, trial, meta, vectors, n_boot)
    return {"calibrated": calibrated, "audit": results.audit_rows(keys, trial, meta, vectors, calibrated)}


def measure_utility(trial: Trial, store: TargetStore, target: Target, device=None) -> dict | None:
    """The target's utility record (stored, or measured now on ``device``); None when utility is off."""
    if trial.utility is None or not trial.utility.enabled:
        return None
    from .utility.target import get_or_measure

    return get_or_measure(store.root, target, trial.utility, trial.heldout_from, device)


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
    utility = measure_utility(trial, store, target, device)
    scores = score_in_process(target, trial, rows, batch_size, device)
    references = []
    for spec in trial_references(trial):
        ref = get_or_train(store, spec, device=device, progress=progress)
        references.append((ref, score_in_process(ref, trial, rows, batch_size, device, reference_attacks(trial))))
    return write_results(root, sweep, trial, target, split, scores, n_boot, utility, references)


def summary_line(metric_rows: list) -> dict:
    """Per attack of one trial: its best step (``mia_ray.steps.best_rows``), AUC and TPRs, for Tune."""
    import pandas as pd

    best = best_rows(pd.DataFrame(metric_rows), ["attack"])
    cols = ["step", "auc", "tpr_at_1pct_fpr", "tpr_at_10pct_fpr"]
    return {
        r["attack"]: {c: as_step(r[c]) if c == "step" else r[c] for c in cols}
        for r in best.to_dict("records")
    }


__all__ = [
    "calibrate_with_references", "calibrated_tables", "eval_samples", "measure_utility", "reference_attacks",
    "run_trial", "score_in_process", "summary_line", "trial_references", "write_results",
]
