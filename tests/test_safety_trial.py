"""Safety net for one trial end to end, in process (issue 10 item 8): a DP target (finite epsilon) reaches
every results table, ``metrics/`` is recomputed from ``scores/`` with scikit-learn, and the evaluated
members are images the target was trained on (seed != 0).

Written against today's in-process runner ``mia_ray.trial.run_trial`` and ``mia_ray.sweep_config.Trial``.
"""

import math
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import tiny_spec
from sklearn.metrics import roc_auc_score, roc_curve

import mia_ray.training.build as train_module
from mia_ray.attacks import AttackSpec
from mia_ray.attacks.likelihood import LikelihoodParams
from mia_ray.attacks.loss import LossParams
from mia_ray.config import DPConfig, Trial
from mia_ray.data import make_split, open_source
from mia_ray.metrics import FPR_TARGETS
from mia_ray.training import TargetStore
from mia_ray.trial import run_trial

EPSILON = 8.0
SEED = 5


@pytest.fixture(scope="module")
def dp_trial(tmp_path_factory, request):
    """One DP trial (5 DP-SGD steps, sampling rate 1/4) scored by the loss attack at 3 steps and the
    likelihood attack on 8 + 8 samples; returns (trial, the four tables, the images trained on)."""
    spec = tiny_spec(steps=5, train_size=64, seed=SEED)
    spec = replace(spec, train=replace(spec.train, batch_size=16), dp=DPConfig(epsilon=EPSILON))
    attacks = [
        AttackSpec("loss", LossParams(steps=[0, 100, 500])),
        AttackSpec("likelihood", LikelihoodParams(), max_samples=8),
    ]
    trial = Trial("dp-trial", spec, eval_size=32, attacks=attacks)
    root = str(tmp_path_factory.mktemp("results"))
    store = TargetStore(str(tmp_path_factory.mktemp("store")))
    seen = {}
    real = train_module.train_target

    def spy(spec_, images, **kw):
        seen["images"] = np.array(images)
        return real(spec_, images, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(train_module, "train_target", spy)
    try:
        returned = run_trial(trial, "safety", root, store, n_boot=20, device="cpu", progress=False)
    finally:
        mp.undo()
    tables = {t: pq.read_table(f"{root}/{t}/{trial.trial_id}.parquet").to_pandas()
              for t in ("metrics", "scores", "targets", "splits")}
    assert len(returned) == len(tables["metrics"])
    return trial, tables, seen["images"]


def test_dp_target_reaches_the_results_tables(dp_trial):
    _, tables, _ = dp_trial
    (target,) = tables["targets"].to_dict("records")
    assert target["epsilon"] == EPSILON
    assert math.isfinite(target["epsilon_spent"]) and 0 < target["epsilon_spent"] < EPSILON
    assert target["noise_multiplier"] > 0 and target["train_steps"] == 5
    metrics = tables["metrics"]
    assert len(metrics) == 4  # loss at 3 steps + likelihood
    assert (metrics["epsilon"] == EPSILON).all()
    assert (metrics["epsilon_spent"] == target["epsilon_spent"]).all()


def test_metrics_are_recomputed_from_scores(dp_trial):
    """Every metrics row equals scikit-learn's AUC and TPR@FPR on the written scores of its (attack, step)."""
    _, tables, _ = dp_trial
    scores, metrics = tables["scores"], tables["metrics"]
    groups = scores.groupby(["attack", scores["step"].fillna(-1)])
    assert len(groups) == len(metrics)
    for (attack, step), g in groups:
        row = metrics[(metrics["attack"] == attack) & (metrics["step"].fillna(-1) == step)]
        assert len(row) == 1, (attack, step)
        row = row.iloc[0]
        y, s = g["is_member"].to_numpy(), g["score"].to_numpy()
        assert row["n_members"] == y.sum() and row["n_nonmembers"] == (~y).sum()
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for col, target in FPR_TARGETS.items():
            reachable = fpr <= target + 1e-12
            if target * (~y).sum() < 1:
                assert math.isnan(row[col]), col
            else:
                assert row[col] == pytest.approx(tpr[reachable].max(), abs=1e-12), col
        assert row["asr"] == pytest.approx(np.max((tpr + 1 - fpr) / 2), abs=1e-12)
        assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
    likelihood = scores[scores["attack"] == "likelihood"]
    assert likelihood["step"].isna().all() and len(likelihood) == 16
    np.testing.assert_allclose(likelihood["score"], -likelihood["statistic"])  # score = -bits/dim


def test_evaluated_members_were_trained_on(dp_trial):
    """The split written, the members trained on and the samples scored all come from the target's seed."""
    trial, tables, trained = dp_trial
    spec = trial.spec
    source = open_source(spec.data)
    split = make_split(len(source), spec.train_size, trial.eval_size, SEED, source.describe())
    splits = tables["splits"]
    np.testing.assert_array_equal(splits.loc[splits["is_member"], "sample_id"], split.members)
    np.testing.assert_array_equal(trained, source.load(split.members))
    scored = tables["scores"].drop_duplicates("sample_id")
    member_ids = scored.loc[scored["is_member"], "sample_id"].to_numpy()
    nonmember_ids = scored.loc[~scored["is_member"], "sample_id"].to_numpy()
    assert set(member_ids) == set(split.eval_members.tolist())
    assert set(nonmember_ids) == set(split.nonmembers.tolist())
    trained_flat = trained.reshape(len(trained), -1)
    for img in source.load(member_ids).reshape(len(member_ids), -1):
        assert (trained_flat == img).all(1).any()  # every scored member is a training image
