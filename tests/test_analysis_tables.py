"""Summary tables give the fixture's known answers; markdown and CSV show them faithfully."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_analysis_fixture import N, build_results, final_loss, known_metrics, shift, trials

import analysis
from analysis import tables

BEST_STEP = {"ddpm": 200, "smld": 500}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return analysis.load(build_results(str(tmp_path_factory.mktemp("out") / "fixture")))


def _row(frame, family, train_size, epsilon):
    hit = frame[
        (frame["family"] == family) & (frame["train_size"] == train_size) & (frame["epsilon"] == epsilon)
    ]
    assert len(hit) == 1
    return hit.iloc[0]


def _assert_metrics(row, d):
    for name, value in known_metrics(d).items():
        assert row[name] == pytest.approx(value, nan_ok=True), name


def test_loss_table_gives_the_best_step_and_its_known_metrics(results):
    table = tables.best_step_table(results, "loss")
    assert len(table) == 8
    for _, family, train_size, epsilon in trials():
        row = _row(table, family, train_size, epsilon)
        assert row["best_step"] == BEST_STEP[family]
        _assert_metrics(row, shift(family, train_size, epsilon, BEST_STEP[family]))
        assert row["n_nonmembers"] == N and row["seeds"] == 1
    top = _row(table, "ddpm", 200, math.inf)
    assert (top["auc"], top["asr"], top["tpr_at_1pct_fpr"]) == (1.0, 1.0, 1.0)
    assert math.isnan(top["tpr_at_0_1pct_fpr"])  # 200 non-members cannot resolve 0.1% FPR
    assert _row(table, "smld", 200, math.inf)["auc"] == pytest.approx(0.92)


def test_likelihood_table(results):
    table = tables.step_free_table(results, "likelihood")
    assert len(table) == 8 and "best_step" not in table
    for _, family, train_size, epsilon in trials():
        _assert_metrics(_row(table, family, train_size, epsilon), shift(family, train_size, epsilon, None))


def test_dp_table(results):
    table = tables.dp_table(results)
    assert len(table) == 8
    for _, family, train_size, epsilon in trials():
        row = _row(table, family, train_size, epsilon)
        assert row["epsilon_spent"] == (math.inf if math.isinf(epsilon) else pytest.approx(0.98))
        assert row["final_loss"] == pytest.approx(final_loss(family, train_size, epsilon))
        assert row["loss_auc"] == pytest.approx(
            known_metrics(shift(family, train_size, epsilon, BEST_STEP[family]))["auc"]
        )
        assert row["likelihood_auc"] == pytest.approx(
            known_metrics(shift(family, train_size, epsilon, None))["auc"]
        )
        assert row["loss_best_step"] == BEST_STEP[family]


def test_all_tables_names(results):
    assert list(tables.all_tables(results)) == ["loss_best_step", "likelihood", "dp"]


def test_markdown_shows_infinity_undefined_values_and_aligned_columns(results):
    text = tables.to_markdown(tables.best_step_table(results, "loss"))
    lines = text.splitlines()
    assert len(lines) == 2 + 8 and len({len(line) for line in lines}) == 1
    assert "TPR@1%FPR" in lines[0] and "best step" in lines[0] and "AUC 95% CI" in lines[0]
    assert "∞ (no DP)" in text and "n/a" in text and "| 1.000 |" in text
    assert set(lines[1]) <= {"|", "-", ":"}
    dp = tables.to_markdown(tables.dp_table(results))
    assert "ε spent" in dp and "loss AUC" in dp and "final loss" in dp and re.search(r"\|\s+∞\s+\|", dp)


def test_csv_round_trip_keeps_raw_values(results, tmp_path):
    paths = tables.write_csvs(tables.all_tables(results), str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["dp.csv", "likelihood.csv", "loss_best_step.csv"]
    back = pd.read_csv(tmp_path / "loss_best_step.csv")
    assert np.isinf(back["epsilon"]).sum() == 4 and back["tpr_at_0_1pct_fpr"].isna().all()


def test_seeds_are_averaged_and_the_best_step_is_the_best_mean():
    rows = []
    for seed, aucs in ((0, {10: 0.9, 20: 0.6}), (1, {10: 0.5, 20: 0.9})):
        for step, auc in aucs.items():
            rows.append(
                {
                    "trial_id": f"s{seed}",
                    "family": "ddpm",
                    "dataset": "digits",
                    "train_size": 64,
                    "epsilon": math.inf,
                    "attack": "loss",
                    "step": step,
                    "n_nonmembers": 64,
                    "auc": auc,
                    "asr": auc,
                    "auc_ci_low": 0.0,
                    "auc_ci_high": 1.0,
                }
            )
    metrics = pd.DataFrame(rows).assign(**{c: np.nan for c in tables.TPR_COLUMNS})
    metrics["step"] = metrics["step"].astype("Int64")
    best = tables.best_step_table(SimpleNamespace(metrics=metrics), "loss")
    assert len(best) == 1 and best["best_step"].iloc[0] == 20  # mean 0.75 beats 0.7, though seed 0 prefers 10
    assert best["auc"].iloc[0] == pytest.approx(0.75) and best["seeds"].iloc[0] == 2
    assert best["auc_std"].iloc[0] == pytest.approx(np.std([0.6, 0.9], ddof=1))
    assert "auc_ci_low" not in best  # a per-trial bootstrap CI does not describe a mean over seeds
