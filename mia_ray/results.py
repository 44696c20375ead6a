"""The results contract: versioned Parquet schemas, the rows of each table, atomic writers (no torch, no ray).

Layout under ``<output>/<sweep name>/``::

    metrics/<trial_id>.parquet   one row per (trial, attack, step)
    scores/<trial_id>.parquet    one row per (trial, sample, attack, step)
    targets/<trial_id>.parquet   one row per trial: the trained target and its DP accounting
    splits/<trial_id>.parquet    one row per sample of the pool that the trial used
    calibrated/<trial_id>.parquet  one row per (trial, attack, target FPR): the calibrated protocol (v2)
    audit/<trial_id>.parquet     one row per (trial, attack, method): empirical epsilon lower bounds (v2)
    sweep.yaml                   the resolved sweep configuration

Each table's rows are built next to its schema (``score_rows``, ``split_rows``, ``target_rows``,
``metric_rows``) and written by :func:`write_trial`, metrics last: a trial is complete when its metrics file
exists. Every file is written whole to a hidden temporary name and renamed into place (a single PUT on object
stores), so a reader never sees half a trial; pyarrow and pandas skip names starting with ``.``.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import audit, calibration
from .config import DataConfig, Trial, spec_json
from .metrics import summarize
from .references import half_mask, universe
from .steps import as_step

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # analysis.load reads these; columns and tables added later read as nulls / empty
TABLES = ("metrics", "scores", "targets", "splits", "calibrated", "audit")

_ID_COLUMNS = [  # the columns of metrics/ that name a (trial, attack) row
    ("sweep", pa.string()),
    ("trial_id", pa.string()),
    ("target_id", pa.string()),
    ("family", pa.string()),
    ("dataset", pa.string()),
    ("train_size", pa.int64()),
    ("eval_size", pa.int64()),
    ("epsilon", pa.float64()),
    ("epsilon_spent", pa.float64()),
    ("seed", pa.int64()),
    ("attack", pa.string()),
]

METRICS = pa.schema(
    [
        *_ID_COLUMNS,
        ("step", pa.int64()),
        ("n_members", pa.int64()),
        ("n_nonmembers", pa.int64()),
        ("auc", pa.float64()),
        ("auc_ci_low", pa.float64()),
        ("auc_ci_high", pa.float64()),
        ("asr", pa.float64()),
        ("tpr_at_10pct_fpr", pa.float64()),
        ("tpr_at_1pct_fpr", pa.float64()),
        ("tpr_at_1pct_fpr_ci_low", pa.float64()),
        ("tpr_at_1pct_fpr_ci_high", pa.float64()),
        ("tpr_at_0_1pct_fpr", pa.float64()),
        ("tpr_at_0_01pct_fpr", pa.float64()),
        ("schema_version", pa.int32()),
    ]
)

SCORES = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("target_id", pa.string()),
        ("sample_id", pa.int64()),
        ("is_member", pa.bool_()),
        ("attack", pa.string()),
        ("step", pa.int64()),
        ("score", pa.float64()),
        ("statistic", pa.float64()),
        ("schema_version", pa.int32()),
    ]
)

TARGETS = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("target_id", pa.string()),
        ("family", pa.string()),
        ("dataset", pa.string()),
        ("train_size", pa.int64()),
        ("seed", pa.int64()),
        ("epsilon", pa.float64()),
        ("epsilon_spent", pa.float64()),
        ("delta", pa.float64()),
        ("noise_multiplier", pa.float64()),
        ("max_grad_norm", pa.float64()),
        ("train_steps", pa.int64()),
        ("batch_size", pa.int64()),
        ("final_loss", pa.float64()),
        ("train_seconds", pa.float64()),
        ("params", pa.int64()),
        ("checkpoint", pa.string()),
        ("spec_json", pa.string()),
        ("schema_version", pa.int32()),
    ]
)

SPLITS = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("target_id", pa.string()),
        ("dataset", pa.string()),
        ("seed", pa.int64()),
        ("sample_id", pa.int64()),
        ("is_member", pa.bool_()),
        ("in_eval", pa.bool_()),
        ("schema_version", pa.int32()),
        ("in_calibration", pa.bool_()),  # v2: evaluation sample in the calibration half (null: not scored)
    ]
)

# --- v2calib: the calibrated protocol and the empirical epsilon lower bounds (schema v2) ---------------

_INT_KEYS = {"chosen_step", "test_fp", "test_tp", "n_cal_members", "n_cal_nonmembers", "n_test_members",
             "n_test_nonmembers", "n_hypotheses", "tp", "fn", "fp", "tn"}
_STR_KEYS = {"oracle_metric", "method", "threshold_selection", "direction"}


def _typed(keys) -> list[tuple[str, pa.DataType]]:
    return [(k, pa.int64() if k in _INT_KEYS else pa.string() if k in _STR_KEYS else pa.float64()) for k in keys]


CALIBRATED = pa.schema(
    [*_ID_COLUMNS, *_typed(calibration.CALIBRATED_KEYS), ("schema_version", pa.int32())]
)
AUDIT = pa.schema(
    [*_ID_COLUMNS, ("step", pa.int64()), *_typed(audit.AUDIT_KEYS), ("schema_version", pa.int32())]
)
ADDED_IN = {("splits", "in_calibration"): 2}  # (table, column) -> the schema version that added it
TABLE_ADDED_IN = {"calibrated": 2, "audit": 2}

# --- end v2calib ---------------------------------------------------------------------------------------

SCHEMAS = {"metrics": METRICS, "scores": SCORES, "targets": TARGETS, "splits": SPLITS, "calibrated": CALIBRATED,
           "audit": AUDIT}
# metrics last: its file marks the trial complete
WRITE_ORDER = ("scores", "splits", "targets", "calibrated", "audit", "metrics")


# --------------------------------------------------------------------------------------------------
# Issue 13 (utilaudit): utility and DP accounting columns of targets/, canaries in splits/ and scores/, and the
# canary_audit/ table (one-run audit). Appended to the schemas above; old columns keep their place.
# --------------------------------------------------------------------------------------------------

UTILITY_COLUMNS = [
    ("utility_fd", pa.float64()),  # Fréchet distance, DDIM samples vs held-out pool images, pool feature net
    ("utility_kid", pa.float64()),  # KID (unbiased MMD^2, cubic kernel), mean over subsets
    ("utility_kid_std", pa.float64()),
    ("utility_n", pa.int64()),  # generated samples
    ("utility_heldout_n", pa.int64()),  # held-out images
    ("utility_sampler_steps", pa.int64()),  # DDIM steps
    ("utility_features", pa.string()),  # <objective>/<feature-net key> in the store
]
DP_ACCOUNTING_COLUMNS = [  # filled from the target's stored statistics when the DP training records them
    ("accountant", pa.string()),
    ("epsilon_rdp", pa.float64()),
    ("epsilon_prv", pa.float64()),
    ("secure_mode", pa.bool_()),
    ("heldout_loss", pa.float64()),
]
for _name, _cols in (
    ("targets", UTILITY_COLUMNS + DP_ACCOUNTING_COLUMNS),
    ("splits", [("is_canary", pa.bool_()), ("canary_included", pa.bool_())]),
    ("scores", [("is_canary", pa.bool_()), ("probe_se", pa.float64())]),
):
    for _col in _cols:
        SCHEMAS[_name] = SCHEMAS[_name].append(pa.field(*_col))
METRICS, SCORES, TARGETS, SPLITS = (SCHEMAS[t] for t in ("metrics", "scores", "targets", "splits"))
ADDED_IN.update({(_name, _col[0]): 2 for _name, _cols in (
    ("targets", UTILITY_COLUMNS + DP_ACCOUNTING_COLUMNS),
    ("splits", [("is_canary", None), ("canary_included", None)]),
    ("scores", [("is_canary", None), ("probe_se", None)]),
) for _col in _cols})

CANARY_AUDIT = pa.schema(
    [
        *list(TARGETS)[:9],  # sweep, trial_id, target_id, family, dataset, train_size, seed, epsilon, epsilon_spent
        ("attack", pa.string()),
        ("step", pa.int64()),
        ("m", pa.int64()),
        ("k_plus", pa.int64()),
        ("k_minus", pa.int64()),
        ("n_guesses", pa.int64()),
        ("n_correct", pa.int64()),
        ("alpha", pa.float64()),
        ("delta", pa.float64()),
        ("epsilon_lb", pa.float64()),
        ("n_steps", pa.int64()),
        ("epsilon_lb_bonferroni", pa.float64()),
        ("schema_version", pa.int32()),
    ]
)
SCHEMAS["canary_audit"] = CANARY_AUDIT
TABLE_ADDED_IN["canary_audit"] = 2
OPTIONAL_TABLES = ("canary_audit",)  # written only by trials that need them (here: with audit.canaries > 0)


def target_extra_columns(meta: dict) -> dict:
    """The targets/ columns of issue 13 from a target's statistics (``meta``; ``meta["utility"]``: its record)."""
    u = meta.get("utility") or {}
    out = {
        "utility_fd": _num(u.get("fd")),
        "utility_kid": _num(u.get("kid")),
        "utility_kid_std": _num(u.get("kid_std")),
        "utility_n": u.get("n_samples"),
        "utility_heldout_n": u.get("n_heldout"),
        "utility_sampler_steps": u.get("sampler_steps"),
        "utility_features": u.get("features"),
    }
    for key, _ in DP_ACCOUNTING_COLUMNS:
        v = meta.get(key)
        out[key] = None if v is None or v == "" else v if key in ("accountant", "secure_mode") else float(v)
    return out


def mark_canaries(rows: list[dict], canary_ids) -> list[dict]:
    """Set ``is_canary`` on score rows (in place; returns them)."""
    canary = {int(i) for i in canary_ids}
    for r in rows:
        r["is_canary"] = r["sample_id"] in canary
    return rows


def canary_split_rows(keys: dict, trial: Trial, canary_ids, included) -> list[dict]:
    """splits/ rows of the canaries (``is_member`` = trained on = ``canary_included``); others get is_canary false."""
    spec = trial.spec
    return [
        {**keys, "dataset": dataset_label(spec.data), "seed": spec.seed, "sample_id": int(i), "is_member": bool(c),
         "in_eval": False, "is_canary": True, "canary_included": bool(c)}
        for i, c in zip(canary_ids, included, strict=True)
    ]


def canary_audit_rows(keys: dict, trial: Trial, meta: dict, scores: dict, canary_ids, included) -> list[dict]:
    """canary_audit/: the one-run epsilon lower bound of every attack and step on the canaries' scores.

    ``epsilon_lb`` holds at ``alpha`` for that (attack, step) alone; ``epsilon_lb_bonferroni`` at alpha / n_steps,
    so the largest one over an attack's steps is still a valid bound at ``alpha``.
    """
    from .audit import canary_audit_row

    spec, audit = trial.spec, trial.audit
    k_plus, k_minus = audit.guesses()
    setting = {**keys, "family": spec.family.name, "dataset": dataset_label(spec.data),
               "train_size": spec.train_size, "seed": spec.seed, "epsilon": spec.dp.epsilon,
               "epsilon_spent": _num(meta["epsilon_spent"])}
    inc = dict(zip((int(i) for i in canary_ids), (bool(c) for c in included), strict=True))
    ids = np.asarray(scores["sample_id"]).astype(np.int64)
    attack = np.asarray(scores["attack"]).astype(str)
    step = np.array([as_step(s) for s in scores["step"]], dtype=object)
    score = np.asarray(scores["score"], dtype=np.float64)
    is_canary = np.isin(ids, list(inc))
    rows = []
    for a in dict.fromkeys(attack[is_canary]):
        mine = is_canary & (attack == a)
        steps = sorted(set(step[mine].tolist()), key=lambda s: (s is not None, s or 0))
        for st in steps:
            sel = mine & np.array([s == st for s in step], dtype=bool)
            order = np.argsort(ids[sel], kind="stable")
            s, labels = score[sel][order], np.array([inc[int(i)] for i in ids[sel][order]])
            one = canary_audit_row(s, labels, k_plus, k_minus, audit.alpha, spec.dp.delta)
            bonf = canary_audit_row(s, labels, k_plus, k_minus, audit.alpha / len(steps), spec.dp.delta)
            rows.append({**setting, "attack": a, "step": st, **one, "n_steps": len(steps),
                         "epsilon_lb_bonferroni": bonf["epsilon_lb"]})
    return rows


def write_grid(root: str, trial_id: str, png: bytes) -> str:
    """The trial's sample grid as ``<root>/grids/<trial_id>.png`` (atomic); returns the path."""
    fs, base = filesystem(root)
    path = f"{base}/grids/{trial_id}.png"
    clear_stale_temps(fs, path)
    write_bytes_atomic(fs, path, png)
    return path


# --- lira: references/ (which universe samples each LiRA reference model trained on) ----------------------
REFERENCES = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("target_id", pa.string()),
        ("reference_id", pa.string()),
        ("reference_index", pa.int64()),
        ("sample_id", pa.int64()),
        ("included", pa.bool_()),
        ("schema_version", pa.int32()),
    ]
)
SCHEMAS["references"] = REFERENCES
TABLE_ADDED_IN["references"] = 2
# ... and each reference model's raw statistic of every scored sample: with references/ and scores/ (the target's
# statistic) an auditor recomputes every LiRA score from the Parquet files alone, without the models.
REFERENCE_SCORES = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("target_id", pa.string()),
        ("reference_id", pa.string()),
        ("reference_index", pa.int64()),
        ("attack", pa.string()),
        ("step", pa.int64()),
        ("sample_id", pa.int64()),
        ("statistic", pa.float64()),
        ("schema_version", pa.int32()),
    ]
)
SCHEMAS["reference_scores"] = REFERENCE_SCORES
TABLE_ADDED_IN["reference_scores"] = 2
OPTIONAL_TABLES = (*OPTIONAL_TABLES, "references", "reference_scores")  # only trials with a reference attack
WRITE_ORDER = ("scores", "splits", "targets", "calibrated", "audit", "references", "reference_scores",
               "metrics")  # metrics last


# --------------------------------------------------------------------------------------------------
# The rows of each table. ``keys`` are the columns that name the trial: sweep, trial_id, target_id.
# --------------------------------------------------------------------------------------------------


def trial_keys(sweep: str, trial_id: str, target_id: str) -> dict:
    return {"sweep": sweep, "trial_id": trial_id, "target_id": target_id}


def dataset_label(data: DataConfig) -> str:
    """The ``dataset`` column: the source name, with its path when it reads one (``folder:/data/x``), or with
    the given members and non-members (``npz:members=/d/train.npy,nonmembers=/d/test.npy``)."""
    if getattr(data, "members", None) or getattr(data, "nonmembers", None):
        keys = [f"{k}={v}" for k, v in (("members_key", data.members_key), ("nonmembers_key", data.nonmembers_key))
                if v is not None]  # one file holding both sets under two keys
        return f"{data.source}:" + ",".join([f"members={data.members}", f"nonmembers={data.nonmembers}", *keys])
    return data.source if not data.path else f"{data.source}:{data.path}"


def score_rows(keys: dict, scores: dict) -> list[dict]:
    """``scores/``: one row per (sample, attack, step) of the long-format columns of ``score_batch``."""
    se = scores.get("probe_se", np.full(len(scores["sample_id"]), np.nan))
    cols = (scores["sample_id"], scores["is_member"], scores["attack"], scores["step"], scores["score"],
            scores["statistic"], se)
    return [
        {**keys, "sample_id": int(s), "is_member": bool(m), "attack": str(a), "step": as_step(st),
         "score": float(sc), "statistic": float(x), "probe_se": None if np.isnan(e) else float(e)}
        for s, m, a, st, sc, x, e in zip(*cols, strict=True)
    ]


def split_rows(keys: dict, trial: Trial, split, in_calibration: dict | None = None) -> list[dict]:
    """``splits/``: every member and non-member id of the trial's split, whether it was scored, and (v2)
    whether a scored sample is in the calibration half (``in_calibration``: id -> bool; null if not scored)."""
    spec = trial.spec
    scored = {True: set(split.eval_members.tolist()), False: set(split.nonmembers.tolist())}
    halves = in_calibration or {}
    return [
        {**keys, "dataset": dataset_label(spec.data), "seed": spec.seed, "sample_id": int(i), "is_member": m,
         "in_eval": int(i) in scored[m], "in_calibration": halves.get(int(i))}
        for ids, m in ((split.members, True), (split.nonmembers, False))
        for i in ids
    ]


def target_rows(keys: dict, trial: Trial, meta: dict, checkpoint: str) -> list[dict]:
    """``targets/``: the trained target (``meta``: its training statistics) and its DP accounting."""
    spec = trial.spec
    return [
        {
            **keys,
            "family": spec.family.name,
            "dataset": dataset_label(spec.data),
            "train_size": spec.train_size,
            "seed": spec.seed,
            "epsilon": spec.dp.epsilon,
            "epsilon_spent": _num(meta["epsilon_spent"]),
            "delta": spec.dp.delta,
            "noise_multiplier": _num(meta["noise_multiplier"]),
            "max_grad_norm": spec.dp.max_grad_norm,
            "train_steps": int(meta["train_steps"]),
            "batch_size": spec.train.batch_size,
            "final_loss": _num(meta["final_loss"]),
            "train_seconds": float(meta["train_seconds"]),
            "params": int(meta["params"]),
            "checkpoint": checkpoint,
            "spec_json": spec_json(spec),
            **target_extra_columns({"secure_mode": spec.dp.secure_mode, **meta}),  # issue 13 (utilaudit)
        }
    ]


def reference_rows(keys: dict, trial: Trial, reference_ids: list[str], pool_size: int) -> list[dict]:
    """``references/``: per reference model of the trial and sample of its universe, whether it trained on it."""
    spec = trial.spec
    u = universe(pool_size, spec.train_size, spec.seed).tolist()
    return [
        {**keys, "reference_id": rid, "reference_index": r, "sample_id": int(i), "included": bool(m)}
        for r, rid in enumerate(reference_ids)
        for i, m in zip(u, half_mask(spec.train_size, spec.seed, r).tolist(), strict=True)
    ]


def reference_score_rows(keys: dict, references: list, attacks: set[str]) -> list[dict]:
    """``reference_scores/``: the statistic of each reference model (index order) for every sample, step and
    reference attack it was scored by; ``references``: (Target, long-format score columns) pairs."""
    rows = []
    for r, (ref, cols) in enumerate(references):
        for attack, step, sid, stat in zip(cols["attack"], cols["step"], cols["sample_id"], cols["statistic"],
                                           strict=True):
            if str(attack) in attacks:
                rows.append({**keys, "reference_id": ref.target_id, "reference_index": r, "attack": str(attack),
                             "step": as_step(step), "sample_id": int(sid), "statistic": float(stat)})
    return rows


def metric_rows(keys: dict, trial: Trial, meta: dict, scores: dict, n_boot: int) -> list[dict]:
    """``metrics/``: ROC metrics (``mia_ray.metrics.summarize``) per attack and step, in score order."""
    spec = trial.spec
    setting = {
        **keys,
        "family": spec.family.name,
        "dataset": dataset_label(spec.data),
        "train_size": spec.train_size,
        "eval_size": trial.eval_size,
        "epsilon": spec.dp.epsilon,
        "epsilon_spent": _num(meta["epsilon_spent"]),
        "seed": spec.seed,
    }
    attack = np.asarray(scores["attack"]).astype(str)
    step = np.array([as_step(s) for s in scores["step"]], dtype=object)
    score, member = np.asarray(scores["score"]), np.asarray(scores["is_member"])
    rows = []
    for a in dict.fromkeys(attack):
        mine = attack == a
        present = set(step[mine].tolist())
        for st in sorted(present, key=lambda s: (s is not None, s or 0)):  # null (step-free) first
            sel = mine & np.array([s == st for s in step], dtype=bool)
            m = summarize(score[sel], member[sel], n_boot=n_boot, seed=spec.seed)
            rows.append({**setting, "attack": a, "step": st, **m})
    return rows


# --- v2calib: rows of calibrated/ and audit/ ----------------------------------------------------------


def calibration_split(trial: Trial, split) -> dict[int, bool]:
    """The calibration / test halves of the evaluation samples (id -> True for calibration), seeded by the
    target's seed and stratified by membership (``mia_ray.calibration.calibration_halves``)."""
    ids = np.concatenate([split.eval_members, split.nonmembers]).astype(np.int64)
    member = np.r_[np.ones(len(split.eval_members), bool), np.zeros(len(split.nonmembers), bool)]
    mask = calibration.calibration_halves(ids, member, trial.spec.seed)
    return {int(i): bool(c) for i, c in zip(ids, mask, strict=True)}


def _setting_row(keys: dict, trial: Trial, meta: dict) -> dict:
    spec = trial.spec
    return {**keys, "family": spec.family.name, "dataset": dataset_label(spec.data), "train_size": spec.train_size,
            "eval_size": trial.eval_size, "epsilon": spec.dp.epsilon, "epsilon_spent": _num(meta["epsilon_spent"]),
            "seed": spec.seed}


def attack_vectors(scores: dict, halves: dict[int, bool]) -> dict[str, tuple]:
    """Per attack: ``(scores_by_step, is_member, in_calibration)`` over the samples it scored (sorted by id),
    ``scores_by_step`` mapping step (None for a step-free attack) to the aligned score vector. Attacks whose
    scored samples lack a member or a non-member in either half are left out (nothing to calibrate)."""
    attack = np.asarray(scores["attack"]).astype(str)
    step = np.array([as_step(s) for s in scores["step"]], dtype=object)
    ids, member = np.asarray(scores["sample_id"], np.int64), np.asarray(scores["is_member"], bool)
    score = np.asarray(scores["score"], np.float64)
    out = {}
    for a in dict.fromkeys(attack):
        mine = attack == a
        by_step, ref = {}, None
        for st in dict.fromkeys(step[mine].tolist()):
            sel = np.flatnonzero(mine & np.array([s == st for s in step], dtype=bool))
            sel = sel[np.argsort(ids[sel], kind="stable")]
            if ref is None:
                ref = sel
            elif not np.array_equal(ids[sel], ids[ref]):
                raise ValueError(f"attack {a}: step {st} scored other samples than step {step[ref[0]]}")
            by_step[st] = score[sel]
        m = member[ref]
        c = np.array([halves[int(i)] for i in ids[ref]], dtype=bool)
        if all((m & h).any() and (~m & h).any() for h in (c, ~c)):
            out[a] = (by_step, m, c)
    return out


def calibrated_rows(keys: dict, trial: Trial, meta: dict, vectors: dict, n_boot: int) -> list[dict]:
    """``calibrated/``: per attack and target FPR of ``mia_ray.metrics.FPR_TARGETS``, the calibrated protocol
    (``mia_ray.calibration.calibrated_rows``): step and threshold chosen on the calibration half, counted on
    the test half. ``vectors``: :func:`attack_vectors`."""
    setting = _setting_row(keys, trial, meta)
    rows = []
    for a, (by_step, m, c) in vectors.items():
        for r in calibration.calibrated_rows(by_step, m, c, n_boot=n_boot, seed=trial.spec.seed):
            rows.append({**setting, "attack": a, **r})
    return rows


def audit_rows(keys: dict, trial: Trial, meta: dict, vectors: dict, calibrated: list[dict]) -> list[dict]:
    """``audit/``: per attack, the Clopper-Pearson and GDP epsilon lower bounds (``mia_ray.audit.audit_rows``,
    alpha 0.05, delta of the target's ``dp.delta`` -- also for targets trained without DP) at the step chosen on
    the calibration half; thresholds chosen on the calibration half, counts from the test half."""
    setting = _setting_row(keys, trial, meta)
    chosen = {r["attack"]: r["chosen_step"] for r in calibrated}
    rows = []
    for a, (by_step, m, c) in vectors.items():
        st = chosen[a]
        for r in audit.audit_rows(by_step[st], m, c, delta=trial.spec.dp.delta):
            rows.append({**setting, "attack": a, "step": st, **r})
    return rows


# --- end v2calib rows ----------------------------------------------------------------------------------


def _num(x) -> float:
    """A stored statistic as a float (NaN when absent)."""
    return float(x) if x is not None else math.nan


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local path or a URI (``s3://``, ``gs://``, ``file://``)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def to_table(rows: list[dict], table: str) -> pa.Table:
    """Rows (dicts) as a table of the named schema; missing ``schema_version`` is filled in."""
    schema = SCHEMAS[table]
    for row in rows:
        row.setdefault("schema_version", SCHEMA_VERSION)
    unknown = set().union(*(r.keys() for r in rows)) - set(schema.names) if rows else set()
    if unknown:
        raise ValueError(f"{table}: columns not in schema v{SCHEMA_VERSION}: {sorted(unknown)}")
    return pa.Table.from_pylist(rows, schema=schema)


def write_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write ``table`` to ``path`` so that readers see either nothing or the whole file."""
    parent = os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, path)  # rename(2): atomic on one filesystem
    else:
        pq.write_table(table, path, filesystem=fs)  # one object PUT: atomic on object stores


def clear_stale_temps(fs: pafs.FileSystem, path: str) -> None:
    """Remove the hidden temporary files of ``path`` (``.<name>.<32 hex>.tmp``) that a writer killed before its
    rename left behind (kill -9 of the whole sweep, measured: a truncated ``targets/.<trial>.parquet.*.tmp``
    survived every rerun). Only for result files of one trial or of the sweep, whose one writer is this run;
    never in the target store, which concurrent sweeps share. Readers skip these names either way."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return  # object stores: one PUT per file, no temporary names
    parent, name = os.path.dirname(path), os.path.basename(path)
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return
    own = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{32}}\.tmp")  # uuid4().hex: not .<name>.bak.<hex>.tmp
    for entry in entries:
        if own.fullmatch(entry):
            try:
                os.remove(os.path.join(parent, entry))
            except FileNotFoundError:
                pass


def write_trial_table(root: str, table: str, trial_id: str, rows: list[dict]) -> str:
    """Write one trial's rows of ``table`` under ``root`` (``<output>/<sweep>``); returns the path."""
    fs, base = filesystem(root)
    path = f"{base}/{table}/{trial_id}.parquet"
    clear_stale_temps(fs, path)
    write_atomic(fs, path, to_table(rows, table))
    return path


def write_trial(root: str, trial_id: str, tables: dict[str, list[dict]]) -> None:
    """Write one trial's tables (rows by table name) atomically, file by file, metrics last."""
    for table in WRITE_ORDER:
        if table in tables:  # references/: only trials with a reference attack (lira)
            write_trial_table(root, table, trial_id, tables[table])


def write_text_atomic(root: str, name: str, text: str) -> None:
    """Write a small text file (e.g. the resolved sweep.yaml) under ``root`` atomically."""
    fs, base = filesystem(root)
    clear_stale_temps(fs, f"{base}/{name}")
    write_bytes_atomic(fs, f"{base}/{name}", text.encode())


def write_bytes_atomic(fs: pafs.FileSystem, path: str, blob: bytes, owner: str = "") -> None:
    """Write ``blob`` to ``path`` whole: a hidden temporary name renamed into place (one PUT on object stores).
    ``owner``: the writer's tag ending the temporary's name (``mia_ray.store_temps``; the shared target store)."""
    parent = os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{parent}/.{os.path.basename(path)}.{uuid.uuid4().hex}{'-' + owner if owner else ''}.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(blob)
        fs.move(tmp, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(blob)


NAME_MAX = 255  # bytes of one file or folder name on Linux, macOS and Windows filesystems


def folder_problem(path: str) -> str | None:
    """Why a local ``path`` cannot become a folder written here (the nearest existing path on it is a file or
    is not writable), or None. Used by the sweep's door (output, store) and by ``python -m analysis --out``."""
    if "\0" in path:  # os.path.exists said False, and the first write raised ValueError (after Ray had started)
        return f"{path!r} holds a NUL character; allowed: a folder path"
    p = os.path.abspath(path)
    long = next((c for c in p.split(os.sep) if len(os.fsencode(c)) > NAME_MAX), None)
    if long is not None:  # ENAMETOOLONG: os.path.exists said False, and the first mkdir failed
        size = len(os.fsencode(long))
        return f"{long[:24]}... is {size} bytes long; allowed: folder names of at most {NAME_MAX} bytes"
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        return f"{p} is a file, not a folder; allowed: a folder path (created if missing)"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"folder {p} is not writable; allowed: a folder you can write to"
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root passes access(2) where no folder can be made (/proc,
        try:  # /sys, NFS with root_squash): make and remove an empty probe folder (nothing else is written)
            os.rmdir(tempfile.mkdtemp(prefix=".mia_ray_probe_", dir=p))
        except OSError as e:
            return f"cannot create a folder in {p} ({e.strerror or e}); allowed: a folder you can write to"
    return None


def trial_done(root: str, trial_id: str) -> bool:
    """True when every table of the trial has been written (the metrics file is written last)."""
    fs, base = filesystem(root)
    infos = fs.get_file_info([f"{base}/{t}/{trial_id}.parquet" for t in TABLES])
    return all(i.type == pafs.FileType.File for i in infos)


def tables_written(root: str) -> list[str]:
    """The results tables that exist under ``root``, in schema order (the optional ones only when written)."""
    fs, base = filesystem(root)
    infos = fs.get_file_info([f"{base}/{t}" for t in SCHEMAS])
    return [t for t, i in zip(SCHEMAS, infos, strict=True) if i.type == pafs.FileType.Directory]
