"""The results contract: versioned Parquet schemas, the rows of each table, atomic writers (no torch, no ray).

Layout under ``<output>/<sweep name>/``::

    metrics/<trial_id>.parquet   one row per (trial, attack, step)
    scores/<trial_id>.parquet    one row per (trial, sample, attack, step)
    targets/<trial_id>.parquet   one row per trial: the trained target and its DP accounting
    splits/<trial_id>.parquet    one row per sample of the pool that the trial used
    sweep.yaml                   the resolved sweep configuration

Each table's rows are built next to its schema (``score_rows``, ``split_rows``, ``target_rows``,
``metric_rows``) and written by :func:`write_trial`, metrics last: a trial is complete when its metrics file
exists. Every file is written whole to a hidden temporary name and renamed into place (a single PUT on object
stores), so a reader never sees half a trial; pyarrow and pandas skip names starting with ``.``.
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .config import DataConfig, Trial, spec_json
from .metrics import summarize
from .steps import as_step

SCHEMA_VERSION = 1
TABLES = ("metrics", "scores", "targets", "splits")

METRICS = pa.schema(
    [
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
    ]
)

SCHEMAS = {"metrics": METRICS, "scores": SCORES, "targets": TARGETS, "splits": SPLITS}
WRITE_ORDER = ("scores", "splits", "targets", "metrics")  # metrics last: its file marks the trial complete


# --------------------------------------------------------------------------------------------------
# The rows of each table. ``keys`` are the columns that name the trial: sweep, trial_id, target_id.
# --------------------------------------------------------------------------------------------------


def trial_keys(sweep: str, trial_id: str, target_id: str) -> dict:
    return {"sweep": sweep, "trial_id": trial_id, "target_id": target_id}


def dataset_label(data: DataConfig) -> str:
    """The ``dataset`` column: the source name, with its path when it reads one (``folder:/data/x``), or with
    the given members and non-members (``npz:members=/d/train.npy,nonmembers=/d/test.npy``)."""
    if getattr(data, "members", None) or getattr(data, "nonmembers", None):
        return f"{data.source}:members={data.members},nonmembers={data.nonmembers}"
    return data.source if not data.path else f"{data.source}:{data.path}"


def score_rows(keys: dict, scores: dict) -> list[dict]:
    """``scores/``: one row per (sample, attack, step) of the long-format columns of ``score_batch``."""
    cols = (scores["sample_id"], scores["is_member"], scores["attack"], scores["step"], scores["score"],
            scores["statistic"])
    return [
        {**keys, "sample_id": int(s), "is_member": bool(m), "attack": str(a), "step": as_step(st),
         "score": float(sc), "statistic": float(x)}
        for s, m, a, st, sc, x in zip(*cols, strict=True)
    ]


def split_rows(keys: dict, trial: Trial, split) -> list[dict]:
    """``splits/``: every member and non-member id of the trial's split, and whether it was scored."""
    spec = trial.spec
    scored = {True: set(split.eval_members.tolist()), False: set(split.nonmembers.tolist())}
    return [
        {**keys, "dataset": dataset_label(spec.data), "seed": spec.seed, "sample_id": int(i), "is_member": m,
         "in_eval": int(i) in scored[m]}
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
        }
    ]


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


def write_trial_table(root: str, table: str, trial_id: str, rows: list[dict]) -> str:
    """Write one trial's rows of ``table`` under ``root`` (``<output>/<sweep>``); returns the path."""
    fs, base = filesystem(root)
    path = f"{base}/{table}/{trial_id}.parquet"
    write_atomic(fs, path, to_table(rows, table))
    return path


def write_trial(root: str, trial_id: str, tables: dict[str, list[dict]]) -> None:
    """Write one trial's tables (rows by table name) atomically, file by file, metrics last."""
    for table in WRITE_ORDER:
        write_trial_table(root, table, trial_id, tables[table])


def write_text_atomic(root: str, name: str, text: str) -> None:
    """Write a small text file (e.g. the resolved sweep.yaml) under ``root`` atomically."""
    fs, base = filesystem(root)
    fs.create_dir(base, recursive=True)
    path = f"{base}/{name}"
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{base}/.{name}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(text.encode())
        fs.move(tmp, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(text.encode())


def trial_done(root: str, trial_id: str) -> bool:
    """True when every table of the trial has been written (the metrics file is written last)."""
    fs, base = filesystem(root)
    infos = fs.get_file_info([f"{base}/{t}/{trial_id}.parquet" for t in TABLES])
    return all(i.type == pafs.FileType.File for i in infos)
