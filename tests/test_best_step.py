"""mia_ray.steps.best_rows: the best step per group, exact AUC ties (up to float noise) to the smallest step."""

import numpy as np
import pandas as pd

from mia_ray.steps import best_rows


def test_equal_aucs_that_differ_in_the_last_bit_go_to_the_smallest_step():
    # 6/15 as scikit-learn computes it for members ranked {0, 2, 7} and {2, 3, 4} of 0..7 (3 members, 5 non-members)
    f = pd.DataFrame({"attack": ["loss"] * 3, "step": [20, 10, 30], "auc": [0.4, 0.39999999999999997, 0.3]})
    best = best_rows(f, ["attack"])
    assert best["step"].tolist() == [10] and best["auc"].tolist() == [0.39999999999999997]


def test_distinct_aucs_and_group_order_as_idxmax():
    rng = np.random.default_rng(0)
    f = pd.DataFrame({"trial_id": rng.choice(["b", "a", "c"], 60), "attack": rng.choice(["x", "w"], 60),
                      "step": rng.permutation(60), "auc": rng.permutation(60) / 64.0})
    f.loc[5, "auc"] = np.nan
    best = best_rows(f, ["trial_id", "attack"])
    rows = f[f["auc"].notna()]
    want = rows.loc[rows.groupby(["trial_id", "attack"])["auc"].idxmax()].reset_index(drop=True)
    pd.testing.assert_frame_equal(best, want)


def test_step_free_rows_and_ties_over_a_null_step():
    f = pd.DataFrame({"attack": ["lik", "loss", "loss"], "step": [None, 50, 10], "auc": [0.6, 0.7, 0.7]})
    best = best_rows(f, ["attack"])
    assert best["attack"].tolist() == ["lik", "loss"] and best["step"].tolist()[1] == 10


def test_attack_comparison_best_step_ties_to_the_smallest_step():
    from analysis.calibrated import attack_comparison_table
    from analysis.loader import Results
    from mia_ray.metrics import FPR_TARGETS

    base = {"family": "ddpm", "dataset": "digits", "train_size": 64, "epsilon": np.inf, "trial_id": "t",
            "n_nonmembers": 64, **dict.fromkeys(FPR_TARGETS, 0.5)}
    rows = [{**base, "attack": "loss", "step": 20, "auc": 0.4}, {**base, "attack": "loss", "step": 10,
            "auc": 0.39999999999999997}, {**base, "attack": "pia", "step": 10, "auc": 0.6}]
    results = Results(root="r", metrics=pd.DataFrame(rows), targets=pd.DataFrame(), config_text="", fs=None, base="")
    t = attack_comparison_table(results)
    assert dict(zip(t["attack"], t["best_step"], strict=True)) == {"loss": 10, "pia": 10}
