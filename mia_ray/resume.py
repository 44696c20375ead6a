"""A rerun into a results folder resumes it: its finished trials are kept as they are, so they must have been
scored as this sweep would score them. Trial ids hash the target, not the attacks: a sweep whose attacks or
steps changed (an edited YAML, or a new mia_ray whose defaults changed, e.g. SecMI's t_sec in session 7) would
otherwise add trials scored differently beside the old ones, one folder mixing two protocols. Checked before
Ray starts, against the first finished trial's ``metrics/`` (one small file): one (attack, step) row per step,
each over eval_size (or the attack's max_samples) members and as many non-members.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .attacks import ATTACKS
from .config import Trial
from .errors import ConfigError
from .results import READABLE_VERSIONS, SCHEMA_VERSION, filesystem, trial_done
from .steps import as_step


def expected_rows(trial: Trial) -> set[tuple[str, int | None]]:
    """The (attack, step) pairs of a trial's ``metrics/`` under this sweep's attacks."""
    t = trial.spec.family.num_steps  # a given pipeline's own T
    return {(a.name, as_step(s)) for a in trial.attacks for s in ATTACKS.get(a.name)().steps(a.params, t)}


def expected_samples(trial: Trial) -> dict[str, int]:
    """Members (= non-members) each attack scores: ``eval_size``, or its ``max_samples`` when fewer."""
    return {a.name: min(trial.eval_size, a.max_samples or trial.eval_size) for a in trial.attacks}


def check_readable(root: str) -> None:
    """Every Parquet file already in a local results folder reads as Parquet (its footer; no rows are read). A
    truncated or foreign ``metrics/x.parquet`` passed: the sweep trained and scored, then its summary failed on that
    file ("cannot read Parquet"), and the sweep still exited 0. Remote roots are left to the run (a listing and a
    read per file)."""
    from .results import SCHEMAS

    if "://" in root:
        return
    for table in SCHEMAS:
        folder = os.path.join(root, table)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):  # the files the analysis reads: *.parquet, not .hidden / _temp
            path = os.path.join(folder, name)
            if not name.endswith(".parquet") or name.startswith((".", "_")) or not os.path.isfile(path):
                continue
            try:
                pq.read_metadata(path)
            except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
                raise ConfigError(
                    f"output: {path} is not a readable Parquet file ({' '.join(str(e).split())[:200]}); allowed: the "
                    "files a sweep writes there: delete it (the sweep recomputes its trial), or give the sweep a new "
                    "name or output"
                ) from None


def check_resumable(root: str, trials: list[Trial]) -> None:
    """Refuse (one line) to resume ``root`` when its finished trials hold other (attack, step) rows, or other
    sample counts, than this sweep's attacks make. Nothing finished, or an unreadable metrics file: nothing to
    compare."""
    fs, base = filesystem(root)
    try:  # one listing of metrics/ (written last), not a probe of every trial's six files (HEADs on S3)
        infos = fs.get_file_info(pafs.FileSelector(f"{base}/metrics", allow_not_found=True))
    except (OSError, ValueError):
        return
    listed = {os.path.basename(i.path) for i in infos}
    _check_same_targets(root, trials, listed)
    done = next((t for t in trials if f"{t.trial_id}.parquet" in listed and trial_done(root, t.trial_id)), None)
    if done is None:
        return
    try:
        rows = pq.read_table(f"{base}/metrics/{done.trial_id}.parquet", filesystem=fs,
                             columns=["attack", "step", "n_members", "n_nonmembers"]).to_pylist()
    except (OSError, ValueError):
        return
    _check_version(root, f"{base}/metrics/{done.trial_id}.parquet", fs, done.trial_id)
    have = {(r["attack"], as_step(r["step"])) for r in rows}
    want = expected_rows(done)
    diff = []
    for name in sorted({a for a, _ in have | want}):
        old = sorted((s for a, s in have if a == name), key=lambda s: (s is not None, s or 0))
        new = sorted((s for a, s in want if a == name), key=lambda s: (s is not None, s or 0))
        if old != new:
            diff.append(f"{name}: steps {_steps(old)} there, {_steps(new)} now")
    n_want = expected_samples(done)  # eval_size, or an attack's max_samples, of members and of non-members
    for name, n in sorted({(r["attack"], (r["n_members"], r["n_nonmembers"])) for r in rows}):
        if name in n_want and n != (n_want[name], n_want[name]):
            diff.append(f"{name}: {n[0]} + {n[1]} samples there, {n_want[name]} + {n_want[name]} now")
    if not diff:
        return
    raise ConfigError(
        f"{root}: its finished trials (e.g. {done.trial_id}) were scored with other attacks than this sweep's "
        f"({'; '.join(diff)}); allowed: resume with the same attacks and eval_size, or give the sweep a new name "
        "or output (or delete the folder)"
    )


def _check_same_targets(root: str, trials: list[Trial], listed: set[str]) -> None:
    """A finished trial of the same family, size, ε and seed as one of this sweep's but another target (the id's
    last part hashes the target spec: the model, training, DP, data or canaries changed) was kept beside the new
    one, and the analysis averaged the two as one setting (two 'seeds' of one seed). Trial ids are
    ``<family>-n<size>-eps<ε>-s<seed>-<target_id[:8]>``; only finished trials (``metrics/``) are compared."""
    ours = {t.trial_id.rsplit("-", 1)[0]: t.trial_id for t in trials}
    for name in sorted(listed):
        if not name.endswith(".parquet") or name.startswith((".", "_")):
            continue
        trial_id = name[: -len(".parquet")]
        setting = trial_id.rsplit("-", 1)[0]
        if setting in ours and ours[setting] != trial_id:
            raise ConfigError(
                f"{root}: its finished trial {trial_id} is the setting and seed of this sweep's {ours[setting]} but "
                "another target (the model, train, dp, data or audit.canaries config changed); allowed: rerun with "
                "the config that wrote it (its sweep.yaml), or give the sweep a new name or output (the analysis "
                "would average the two as one setting)"
            )


def _check_version(root: str, path: str, fs, trial_id: str) -> None:
    """A finished trial written by a newer (or older, unreadable) mia_ray's schema was kept as done: the sweep ran
    the missing trials beside it, then its own summary refused the folder (``analysis``: schema_version)."""
    try:
        found = set(pq.read_table(path, filesystem=fs, columns=["schema_version"])["schema_version"].to_pylist())
    except (OSError, ValueError):  # no such column: nothing to compare
        return
    other = sorted(v for v in found if v is not None and v not in READABLE_VERSIONS)
    if other:
        raise ConfigError(
            f"{root}: its finished trials (e.g. {trial_id}) are of results schema_version {other[0]}, this mia_ray "
            f"writes {SCHEMA_VERSION} and reads {', '.join(map(str, READABLE_VERSIONS))}; allowed: resume with the "
            "mia_ray that wrote them, or give the sweep a new name or output"
        )


def _steps(steps: list) -> str:
    if not steps:
        return "none"
    shown = ["-" if s is None else str(s) for s in steps]
    return "[" + ", ".join(shown if len(shown) <= 6 else [*shown[:3], "...", *shown[-2:]]) + "]"
