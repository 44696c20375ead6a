"""A results directory with known answers, shared by the analysis tests (and tests of its own truth).

Each (trial, step) scores 200 members ``i + d`` against 200 non-members ``j`` (i, j = 0..199): a shift
``d`` with ties. Closed forms, members positive: AUC = 1 - (1 - d/200)^2 / 2, ASR = 1/2 + d/400,
TPR@10%FPR = min(20 + d, 200)/200, TPR@1%FPR = min(2 + d, 200)/200, TPR@0.1%FPR = NaN (< 1000 non-members).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mia_ray.metrics import summarize
from mia_ray.results import write_trial_table

N = 200  # members and non-members scored per trial
FAMILIES = ("ddpm", "smld")
TRAIN_SIZES = (200, 800)
EPSILONS = (math.inf, 1.0)
STEPS = (0, 100, 200, 500, 999)
SHIFT = {  # family -> step -> shift d for train_size 200 without DP; None = the likelihood attack
    "ddpm": {0: 20, 100: 100, 200: 200, 500: 60, 999: 0, None: 50},
    "smld": {0: 10, 100: 40, 200: 80, 500: 120, 999: 0, None: 30},
}
SWEEP_YAML = "name: fixture\noutput_dir: /tmp/x\ngrid:\n  family: [ddpm, smld]\n  epsilon: [.inf, 1.0]\n"


def shift(family: str, train_size: int, epsilon: float, step: int | None) -> int:
    factor = (1.0 if train_size == 200 else 0.5) * (1.0 if math.isinf(epsilon) else 0.1)
    return round(SHIFT[family][step] * factor)


def roc_metrics(scores, member) -> dict:
    """The metrics that analysis reads (mia_ray.metrics, the one ROC implementation), without bootstrap."""
    return summarize(scores, member, n_boot=0)


def known_metrics(d: int) -> dict:
    return {
        "auc": 1 - (1 - d / N) ** 2 / 2,
        "asr": 0.5 + d / (2 * N),
        "tpr_at_10pct_fpr": min(20 + d, N) / N,
        "tpr_at_1pct_fpr": min(2 + d, N) / N,
        "tpr_at_0_1pct_fpr": math.nan,
        "tpr_at_0_01pct_fpr": math.nan,
    }


def final_loss(family: str, train_size: int, epsilon: float) -> float:
    return (0.05 if family == "ddpm" else 0.5) * (1 if math.isinf(epsilon) else 2) + train_size / 1e5


def trials():
    for family in FAMILIES:
        for train_size in TRAIN_SIZES:
            for epsilon in EPSILONS:
                dp = "nodp" if math.isinf(epsilon) else f"eps{epsilon:g}"
                yield f"{family}-{train_size}-{dp}", family, train_size, epsilon


def build_results(root: str, schema_version: int | None = None, keep=None, likelihood: bool = True) -> str:
    """Write the fixture sweep under ``root`` (``<output>/<sweep>``); returns ``root``.

    ``keep(trial_id)`` selects trials; ``likelihood=False`` leaves the likelihood attack out.
    """
    extra = {} if schema_version is None else {"schema_version": schema_version}
    for trial_id, family, train_size, epsilon in trials():
        if keep is not None and not keep(trial_id):
            continue
        common = {"sweep": "fixture", "trial_id": trial_id, "target_id": f"t-{trial_id}", **extra}
        spent = math.inf if math.isinf(epsilon) else 0.98 * epsilon
        metrics, scores = [], []
        for step in (*STEPS, None) if likelihood else STEPS:
            d = shift(family, train_size, epsilon, step)
            attack = "loss" if step is not None else "likelihood"
            known = known_metrics(d)
            metrics.append(
                {
                    **common,
                    "family": family,
                    "dataset": "digits",
                    "train_size": train_size,
                    "eval_size": N,
                    "epsilon": epsilon,
                    "epsilon_spent": spent,
                    "seed": 0,
                    "attack": attack,
                    "step": step,
                    "n_members": N,
                    "n_nonmembers": N,
                    **known,
                    "auc_ci_low": known["auc"] - 0.02,
                    "auc_ci_high": min(known["auc"] + 0.02, 1.0),
                }
            )
            for i in range(N):
                for sample_id, member, score in ((i, True, i + d), (1000 + i, False, i)):
                    scores.append(
                        {
                            **common,
                            "sample_id": sample_id,
                            "is_member": member,
                            "attack": attack,
                            "step": step,
                            "score": float(score),
                            "statistic": -float(score),
                        }
                    )
        target = {
            **common,
            "family": family,
            "dataset": "digits",
            "train_size": train_size,
            "seed": 0,
            "epsilon": epsilon,
            "epsilon_spent": spent,
            "delta": 1e-5,
            "noise_multiplier": 0.0 if math.isinf(epsilon) else 1.7,
            "max_grad_norm": 1.0,
            "train_steps": 500,
            "batch_size": 64,
            "final_loss": final_loss(family, train_size, epsilon),
            "train_seconds": 1.0,
            "params": 1000,
            "checkpoint": f"/store/{trial_id}",
            "spec_json": "{}",
        }
        members = [(i, True, i < N) for i in range(train_size)]
        nonmembers = [(1000 + i, False, True) for i in range(N)]
        splits = [
            {**common, "dataset": "digits", "seed": 0, "sample_id": s, "is_member": m, "in_eval": e}
            for s, m, e in members + nonmembers
        ]
        write_trial_table(root, "scores", trial_id, scores)
        write_trial_table(root, "targets", trial_id, [target])
        write_trial_table(root, "splits", trial_id, splits)
        write_trial_table(root, "metrics", trial_id, metrics)
    with open(f"{root}/sweep.yaml", "w") as f:
        f.write(SWEEP_YAML)
    return root


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> str:
    return build_results(str(tmp_path_factory.mktemp("out") / "fixture"))


def brute_force(scores: np.ndarray, is_member: np.ndarray) -> dict:
    """Reference metrics by enumerating thresholds and pairs (slow, obviously right)."""
    pos, neg = scores[is_member], scores[~is_member]
    auc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        pos.size * neg.size
    )
    points = [((neg >= t).mean(), (pos >= t).mean()) for t in np.unique(scores)] + [(0.0, 0.0)]
    out = {"auc": auc, "asr": max((tpr + 1 - fpr) / 2 for fpr, tpr in points)}
    for name, target in (("tpr_at_10pct_fpr", 0.1), ("tpr_at_1pct_fpr", 0.01), ("tpr_at_0_1pct_fpr", 0.001)):
        ok = [tpr for fpr, tpr in points if fpr <= target + 1e-12]
        out[name] = max(ok) if target * neg.size >= 1 - 1e-9 else math.nan
    return out


@pytest.mark.parametrize("d", [0, 1, 7, 100, 150, 199, 200, 250])
def test_closed_forms_match_brute_force_and_roc(d):
    scores = np.r_[np.arange(N) + d, np.arange(N)].astype(float)
    member = np.r_[np.ones(N, bool), np.zeros(N, bool)]
    expected = known_metrics(min(d, N)) if d <= N else known_metrics(N)
    for got in (brute_force(scores, member), roc_metrics(scores, member)):
        for name in ("auc", "asr", "tpr_at_10pct_fpr", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"):
            assert got[name] == pytest.approx(expected[name], nan_ok=True), (d, name)


def test_roc_on_random_ties_and_non_finite_scores_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n_pos, n_neg = rng.integers(1, 300, size=2)
        scores = rng.integers(0, 15, size=n_pos + n_neg).astype(float) + 0.5 * rng.random() * (trial % 2)
        member = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
        rng.shuffle(member)
        got, want = roc_metrics(scores, member), brute_force(scores, member)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, nan_ok=True), (trial, name)
    scores = np.array([np.nan, -np.inf, 1.0, np.inf, 1.0])
    member = np.array([True, False, False, True, True])
    ranked = np.where(np.isnan(scores), -np.inf, scores)  # NaN ties with -inf, below every finite score
    assert roc_metrics(scores, member)["auc"] == pytest.approx(brute_force(ranked, member)["auc"]) == 4 / 6
