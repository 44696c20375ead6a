"""Open a results directory (``<output>/<sweep name>/``) and check that it is one we can read.

Metrics and targets are small and read at once; scores and splits can be large (steps x samples x trials)
and are read on first use, or in slices with :func:`read_scores`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mia_ray.results import ADDED_IN, READABLE_VERSIONS, SCHEMA_VERSION, SCHEMAS, filesystem


class AnalysisError(ValueError):
    """A directory that cannot be analysed; the message is one line naming it and what was expected."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


@dataclass(repr=False)
class Results:
    """The tables of one sweep, plus its resolved config (``sweep.yaml``) as text.

    ``calibrated`` and ``audit`` (schema v2) are empty frames for a v1 folder; columns a folder's version
    lacks (e.g. ``splits.in_calibration`` in v1) read as nulls.
    """

    root: str
    metrics: pd.DataFrame
    targets: pd.DataFrame
    config_text: str
    fs: pafs.FileSystem = field(repr=False)
    base: str = field(repr=False)
    calibrated: pd.DataFrame = field(default_factory=lambda: _empty("calibrated"), repr=False)
    audit: pd.DataFrame = field(default_factory=lambda: _empty("audit"), repr=False)

    @cached_property
    def scores(self) -> pd.DataFrame:
        """Every per-sample score of the sweep (can be large: prefer :func:`read_scores` with filters)."""
        return read_scores(self)

    @cached_property
    def nonfinite_scores(self) -> pd.DataFrame:
        """The ``scores/`` rows whose score is NaN or ±inf (usually none): read once, however many views name them
        (the printed summary and the report)."""
        return read_scores(self, columns=["trial_id", "attack", "sample_id", "score"], nonfinite=True)

    @cached_property
    def splits(self) -> pd.DataFrame:
        """The saved member / non-member sample ids of every trial."""
        return _read(self, "splits")

    def has_table(self, table: str) -> bool:
        """Whether ``table/`` holds a Parquet file."""
        return bool(_parquet_files(self.fs, self.base, table))

    def __repr__(self) -> str:
        trials = self.metrics["trial_id"].nunique()
        return f"Results(root={self.root!r}, trials={trials}, metric rows={len(self.metrics)})"

    @property
    def sweep_name(self) -> str:
        names = self.metrics["sweep"].dropna().unique()
        return ", ".join(map(str, names)) if len(names) else self.root


def _parquet_files(fs: pafs.FileSystem, base: str, table: str) -> list[str]:
    """The Parquet files of ``base/table``; a table that is a file (or cannot be listed) is one line naming it (it
    was a NotADirectoryError traceback)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{base}/{table}", allow_not_found=True))
    except (pa.ArrowException, OSError) as exc:
        what = "is not a folder" if isinstance(exc, NotADirectoryError) else f"cannot be listed ({_one_line(exc)})"
        raise AnalysisError(f"{base}/{table} {what}; expected a folder of Parquet files written by "
                            "python -m mia_ray.sweep") from None
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.base_name.endswith(".parquet")
        and not i.base_name.startswith((".", "_"))
    )


def _has_metrics(fs: pafs.FileSystem, folder: str) -> bool:
    """Whether ``folder`` holds metrics Parquet files (a folder whose metrics/ is not a folder does not)."""
    try:
        return bool(_parquet_files(fs, folder, "metrics"))
    except AnalysisError:
        return False


def _dataset(fs: pafs.FileSystem, base: str, table: str) -> ds.Dataset | None:
    files = _parquet_files(fs, base, table)
    # the current schema: a column an older version lacks reads as nulls, whatever file comes first
    return ds.dataset(files, schema=SCHEMAS[table], filesystem=fs, format="parquet") if files else None


def _to_frame(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    if "step" in df.columns:
        df["step"] = df["step"].astype("Int64")  # null for step-free attacks
    return df


def _empty(table: str, columns: list[str] | None = None) -> pd.DataFrame:
    schema = SCHEMAS[table]
    names = columns or schema.names
    return _to_frame(pa.Table.from_pylist([], schema=pa.schema([schema.field(n) for n in names])))


def _read(results: Results, table: str, filter_=None, columns=None) -> pd.DataFrame:
    dataset = _dataset(results.fs, results.base, table)
    if dataset is None:
        return _empty(table, columns)
    try:
        return _to_frame(dataset.to_table(columns=columns, filter=filter_))
    except (pa.ArrowException, OSError) as exc:
        raise AnalysisError(f"{results.root}/{table}: cannot read Parquet: {_one_line(exc)}") from exc


def _isin(column: str, values) -> ds.Expression:
    values = [values] if isinstance(values, (str, int)) or not isinstance(values, Iterable) else list(values)
    return pc.field(column).isin(values)


def read_scores(
    results: Results,
    attack: str | Iterable[str] | None = None,
    step: int | Iterable[int] | None = None,
    trial_id: str | Iterable[str] | None = None,
    columns: list[str] | None = None,
    nonfinite: bool = False,
) -> pd.DataFrame:
    """Rows of ``scores/`` matching every filter given (a value or a list of values), read lazily;
    ``nonfinite``: only scores that are NaN or ±inf."""
    filters = [
        _isin(name, value)
        for name, value in (("attack", attack), ("step", step), ("trial_id", trial_id))
        if value is not None
    ]
    if nonfinite:
        filters.append(~pc.is_finite(pc.field("score")))
    expr = None
    for f in filters:
        expr = f if expr is None else expr & f
    return _read(results, "scores", expr, columns)


def _footer(fs: pafs.FileSystem, path: str) -> pq.FileMetaData:
    """The Parquet footer of ``path``; a damaged file is one line naming it (deleting it and re-running the
    sweep recomputes that trial: a trial counts as done only when all its files exist)."""
    try:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata
    except (pa.ArrowException, OSError) as exc:
        raise AnalysisError(
            f"{path}: cannot read Parquet ({_one_line(exc)}); delete it and re-run the sweep to recompute its trial"
        ) from exc


def _file_columns(fs: pafs.FileSystem, files: list[str]) -> dict[str, set[str]]:
    """The columns of each of ``files`` (from the Parquet footers)."""
    return {path: set(_footer(fs, path).schema.to_arrow_schema().names) for path in files}


def _check_columns(root: str, table: str, columns: dict[str, set[str]], version: int) -> None:
    """Every column of the schema that ``version`` (the oldest found) already had must be in every file; the
    message names the first file lacking some (a file of another table copied in, a foreign Parquet file)."""
    wanted = [n for n in SCHEMAS[table].names if ADDED_IN.get((table, n), 1) <= version]
    for path, names in columns.items():
        missing = [n for n in wanted if n not in names]
        if missing:
            raise AnalysisError(
                f"{root}/{table}: missing columns {missing} in {os.path.basename(path)}; expected mia_ray results "
                f"schema v{version}"
            )


def _check_versions(root: str, table: str, versions: Iterable) -> int:
    """The oldest schema_version found (the current one when none is recorded)."""
    found = sorted({int(v) for v in versions if v is not None and not pd.isna(v)})
    unknown = [v for v in found if v not in READABLE_VERSIONS]
    if unknown:
        readable = ", ".join(map(str, READABLE_VERSIONS[:-1]))
        raise AnalysisError(
            f"{root}/{table}: schema_version {', '.join(map(str, found))}, "
            f"but this analysis reads schema_version {SCHEMA_VERSION} (and older: {readable})"
        )
    return found[0] if found else SCHEMA_VERSION


def _file_versions(fs: pafs.FileSystem, files: list[str]) -> dict[str, set]:
    """schema_version of each file from Parquet statistics (no need to read the rows); files without the column
    are left out."""
    versions: dict[str, set] = {}
    for path in files:
        meta = _footer(fs, path)
        idx = meta.schema.to_arrow_schema().get_field_index("schema_version")
        if idx < 0:
            continue
        found = versions.setdefault(path, set())
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(idx).statistics
            if stats is not None and stats.has_min_max:
                found.update((stats.min, stats.max))
            else:  # no statistics: read that one column
                found.update(pq.read_table(path, columns=["schema_version"], filesystem=fs)[0].to_pylist())
                break
    return versions


def _check_one_version(root: str, table: str, versions: dict[str, set]) -> None:
    """Files of two schema versions in one table (an interrupted rerun of a v1 folder by this mia_ray, or files
    copied in from another folder) were read together: v1 trials lack the ``calibrated/`` and ``audit/`` rows that
    v2 findings are judged on, so the findings silently covered the v2 trials only."""
    by_version: dict[int, str] = {}
    for path, found in versions.items():
        for v in found:
            if v is not None and not pd.isna(v):
                by_version.setdefault(int(v), os.path.basename(path))
    if len(by_version) > 1:
        (old, old_file), (new, new_file) = min(by_version.items()), max(by_version.items())
        raise AnalysisError(
            f"{root}/{table}: files of schema_version {old} ({old_file}) and {new} ({new_file}); allowed: one "
            f"schema_version per results directory: re-run the sweep with the mia_ray that wrote the newer files "
            "to recompute the older trials (a trial counts as done only with all its tables), or analyse the two "
            "apart"
        )


def _read_config(fs: pafs.FileSystem, base: str) -> str:
    try:
        with fs.open_input_stream(f"{base}/sweep.yaml") as f:
            return f.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, OSError):
        return ""


def _check_one_file_per_trial(results: Results) -> None:
    """A metrics row per (trial, attack, step): a trial in two files (``x.parquet`` and a copy, ``x (1).parquet``)
    was read twice, and the tables and findings averaged it in twice, silently."""
    m = results.metrics
    dup = m[m.duplicated(["trial_id", "attack", "step"], keep=False)]
    if dup.empty:
        return
    trial = str(dup["trial_id"].iloc[0])
    files = [os.path.basename(p) for p in _parquet_files(results.fs, results.base, "metrics")
             if trial in pq.read_table(p, columns=["trial_id"], filesystem=results.fs)["trial_id"].to_pylist()]
    raise AnalysisError(
        f"{results.root}/metrics: trial {trial!r} has {len(dup[dup['trial_id'] == trial])} rows for "
        f"{len(dup[dup['trial_id'] == trial].drop_duplicates(['attack', 'step']))} (attack, step) pairs, in "
        f"{', '.join(files)}; allowed: one file per trial, as the sweep writes it (<trial_id>.parquet): delete the copy"
    )


def _check_one_target_per_seed(results: Results) -> None:
    """One target per (dataset, family, train size, ε, seed): a sweep rerun into its folder after its model,
    training or DP config changed added new targets beside the old ones, and the tables averaged the two as two
    seeds of one setting (``seeds`` counted trials), silently."""
    keys = ["dataset", "family", "train_size", "epsilon", "seed"]
    trials = results.metrics.drop_duplicates("trial_id")
    clash = trials[trials.duplicated(keys, keep=False)]
    if clash.empty:
        return
    first = clash[(clash[keys] == clash[keys].iloc[0]).all(axis=1)]
    a, b = sorted(first["trial_id"].astype(str))[:2]
    raise AnalysisError(
        f"{results.root}/metrics: trials {a!r} and {b!r} have the same dataset, family, train size, ε and seed but "
        "different targets (a rerun into this folder after the model, train or dp config changed); allowed: one "
        "target per setting and seed (the tables would average them as two seeds): move one set of trials to "
        "another folder"
    )


def _check_auc(results: Results) -> None:
    """Every AUC in [0, 1], as the sweep writes it (scikit-learn's AUC of two non-empty classes): a null or NaN AUC
    (an edited or foreign file) dropped its setting from the tables and findings, silently, and made step 0 the
    "best step" of the attack comparison."""
    m = results.metrics
    bad = m[~m["auc"].between(0.0, 1.0)]
    if bad.empty:
        return
    row = bad.iloc[0]
    step = "" if pd.isna(row["step"]) else f" step {row['step']}"
    more = f" (and {len(bad) - 1} more row(s))" if len(bad) > 1 else ""
    raise AnalysisError(
        f"{results.root}/metrics: trial {row['trial_id']!r} attack {row['attack']!r}{step} has auc {row['auc']}"
        f"{more}; allowed: an AUC in [0, 1], as the sweep writes it: delete that trial's files and re-run the sweep "
        "to recompute it"
    )


def load(results_dir: str) -> Results:
    """Open ``results_dir`` (``<output>/<sweep name>/``, a local path or a URI) for analysis.

    Raises :class:`AnalysisError` when it is missing, is not a mia_ray results directory, or was
    written with another ``schema_version``.
    """
    root = str(results_dir).rstrip("/")
    try:
        fs, base = filesystem(root)
        info = fs.get_file_info(base)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise AnalysisError(f"cannot open results directory {root}: {_one_line(exc)}") from exc
    if info.type == pafs.FileType.NotFound:
        raise AnalysisError(f"results directory not found: {root}")
    if info.type != pafs.FileType.Directory:
        raise AnalysisError(f"{root} is not a directory; expected a results directory <output>/<sweep name>/")
    if not _parquet_files(fs, base, "metrics"):
        sweeps = [
            i.base_name
            for i in fs.get_file_info(pafs.FileSelector(base))
            if i.type == pafs.FileType.Directory and _has_metrics(fs, i.path)
        ]
        hint = f"; it holds the sweeps {', '.join(sorted(sweeps))}: pass {root}/<sweep>" if sweeps else ""
        parent, _, name = base.rpartition("/")
        if not hint and name in (*SCHEMAS, "report") and parent and _has_metrics(fs, parent):  # a table or report/
            hint = f"; it is {name}/ of the results directory {root.rpartition('/')[0]}: pass that"
        others = [t for t in SCHEMAS if t != "metrics" and _parquet_files(fs, base, t)]
        if others and not hint:  # a trial writes metrics/ with its other tables: none finished here
            hint = (f"; it has {', '.join(o + '/' for o in others)} but no metrics/: no trial finished (rerun the "
                    "sweep to finish them)")
        raise AnalysisError(
            f"{root} is not a mia_ray results directory: no metrics/*.parquet "
            f"(expected metrics/, scores/, targets/, splits/ written by python -m mia_ray.sweep){hint}"
        )
    results = Results(root, _empty("metrics"), _empty("targets"), _read_config(fs, base), fs, base)
    for table in SCHEMAS:
        files = _parquet_files(fs, base, table)
        if not files:
            continue
        columns = _file_columns(fs, files)
        version = SCHEMA_VERSION
        if all("schema_version" in names for names in columns.values()):
            by_file = _file_versions(fs, files)
            version = _check_versions(root, table, [v for found in by_file.values() for v in found])
            _check_one_version(root, table, by_file)
        _check_columns(root, table, columns, version)
    results.metrics = _read(results, "metrics")
    if results.metrics.empty:  # an empty report, and exit 0, said nothing was wrong
        raise AnalysisError(
            f"{root}: metrics/ holds {len(_parquet_files(fs, base, 'metrics'))} Parquet file(s) but no rows; "
            "expected the results of a finished sweep (one metrics/ row per trial, attack and step)"
        )
    _check_one_file_per_trial(results)
    _check_one_target_per_seed(results)
    _check_auc(results)
    results.targets = _read(results, "targets")
    results.calibrated = _read(results, "calibrated")
    results.audit = _read(results, "audit")
    return results
