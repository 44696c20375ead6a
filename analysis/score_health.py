"""Scores an attack failed to compute (NaN, ±inf): named wherever results are shown, since the metrics rank them."""

from __future__ import annotations

import numpy as np

from analysis.loader import Results


def nonfinite_warnings(results: Results) -> list[str]:
    """One line per (target, attack) that has NaN or ±inf scores. Metrics rank them (NaN and -inf as the least
    member-like, +inf as the most: mia_ray/metrics.py), so such a target's AUC says how the attack fared with
    failed scores, which is not the same as how much the model leaks: the user must be told."""
    out = []
    for (tid, attack), g in results.nonfinite_scores.groupby(["trial_id", "attack"], sort=True):
        s = g["score"].to_numpy()
        kinds = {"NaN": int(np.isnan(s).sum()), "+inf": int((s == np.inf).sum()), "-inf": int((s == -np.inf).sum())}
        what = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
        out.append(f"warning: {tid} {attack}: {len(s)} score(s) not finite ({what}) on {g['sample_id'].nunique()} "
                   "sample(s); ranked as the least (NaN, -inf) or most (+inf) member-like, so its AUC also measures "
                   "these failures (rows in scores/)")
    return out
