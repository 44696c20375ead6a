"""A rerun into a results folder resumes it: its finished trials are kept as they are, so they must have been
scored as this sweep would score them. Trial ids hash the target, not the attacks: a sweep whose attacks or
steps changed (an edited YAML, or a new mia_ray whose defaults changed, e.g. SecMI's t_sec in session 7) would
otherwise add trials scored differently beside the old ones, one folder mixing two protocols. Checked before
Ray starts, against the first finished trial's ``metrics/`` (one small file): one (attack, step) row per step.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from .attacks import ATTACKS
from .config import Trial
from .errors import ConfigError
from .results import filesystem, trial_done
from .steps import as_step


def expected_rows(trial: Trial) -> set[tuple[str, int | None]]:
    """The (attack, step) pairs of a trial's ``metrics/`` under this sweep's attacks."""
    t = trial.spec.family.num_steps  # a given pipeline's own T
    return {(a.name, as_step(s)) for a in trial.attacks for s in ATTACKS.get(a.name)().steps(a.params, t)}


def check_resumable(root: str, trials: list[Trial]) -> None:
    """Refuse (one line) to resume ``root`` when its finished trials hold other (attack, step) rows than this
    sweep's attacks make. Nothing finished, or an unreadable metrics file: nothing to compare."""
    done = next((t for t in trials if trial_done(root, t.trial_id)), None)
    if done is None:
        return
    fs, base = filesystem(root)
    try:
        table = pq.read_table(f"{base}/metrics/{done.trial_id}.parquet", columns=["attack", "step"], filesystem=fs)
    except (OSError, ValueError):
        return
    have = {(a, as_step(s)) for a, s in zip(table.column("attack").to_pylist(), table.column("step").to_pylist(),
                                            strict=True)}
    want = expected_rows(done)
    if have == want:
        return
    diff = []
    for name in sorted({a for a, _ in have | want}):
        old = sorted((s for a, s in have if a == name), key=lambda s: (s is not None, s or 0))
        new = sorted((s for a, s in want if a == name), key=lambda s: (s is not None, s or 0))
        if old != new:
            diff.append(f"{name}: steps {_steps(old)} there, {_steps(new)} now")
    raise ConfigError(
        f"{root}: its finished trials (e.g. {done.trial_id}) were scored with other attacks than this sweep's "
        f"({'; '.join(diff)}); allowed: resume with the same attacks, or give the sweep a new name or output "
        "(or delete the folder)"
    )


def _steps(steps: list) -> str:
    if not steps:
        return "none"
    shown = ["-" if s is None else str(s) for s in steps]
    return "[" + ", ".join(shown if len(shown) <= 6 else [*shown[:3], "...", *shown[-2:]]) + "]"
