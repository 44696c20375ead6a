"""Issue 13 in the analysis: the privacy-utility figure and table, and the sample grids in the report."""

import numpy as np
import pytest
from test_analysis_fixture import build_results

import analysis
from analysis.figures import epsilon_lower_bounds, privacy_utility, privacy_utility_table
from mia_ray.results import write_grid, write_trial_table


def _with_utility(root: str) -> dict:
    """Give every fixture target a known FD (DP targets worse) and a grid; returns trial -> FD."""
    results = analysis.load(root)
    fds = {}
    for row in results.targets.to_dict("records"):
        fd = (1.0 if np.isinf(row["epsilon"]) else 5.0) + row["train_size"] / 1000
        fds[row["trial_id"]] = fd
        row.update(utility_fd=fd, utility_kid=fd / 10, utility_kid_std=0.01, utility_n=256, utility_heldout_n=597,
                   utility_sampler_steps=50, utility_features="classifier/abc")
        row = {k: (None if isinstance(v, float) and np.isnan(v) and not k.startswith("utility") else v)
               for k, v in row.items()}
        write_trial_table(root, "targets", row["trial_id"], [row])
        with open(_png(), "rb") as f:
            write_grid(root, row["trial_id"], f.read())
    return fds


def _png() -> str:
    import os
    import tempfile

    from mia_ray.utility.grid import save_grid

    path = os.path.join(tempfile.gettempdir(), "mia_ray_test_grid.png")
    save_grid(np.zeros((4, 1, 8, 8), np.float32), path)
    return path


@pytest.fixture
def root(tmp_path):
    return build_results(str(tmp_path / "fixture"))


def test_without_utility_there_is_no_privacy_utility_figure(root, tmp_path):
    assert privacy_utility(analysis.load(root), str(tmp_path / "fig")) is None


def test_privacy_utility_table_and_figure_without_an_audit(root, tmp_path):
    fds = _with_utility(root)
    results = analysis.load(root)
    table = privacy_utility_table(results)
    assert len(table) == 8 and table["epsilon_lb"].isna().all()
    m = results.metrics
    for r in table.to_dict("records"):
        trials = results.targets[(results.targets["family"] == r["family"])
                                 & (results.targets["train_size"] == r["train_size"])
                                 & (results.targets["epsilon"] == r["epsilon"])]["trial_id"]
        assert r["utility_fd"] == pytest.approx(np.mean([fds[t] for t in trials]))
        assert r["best_auc"] == pytest.approx(m[m["trial_id"].isin(trials)]["auc"].max())
    path = privacy_utility(results, str(tmp_path / "fig"))
    assert path.endswith("privacy_utility.png")


def test_epsilon_lower_bounds_come_from_the_canary_audit_and_the_audit_table(root, tmp_path):
    _with_utility(root)
    results = analysis.load(root)
    trial = results.targets["trial_id"].iloc[0]
    base = {"sweep": "fixture", "trial_id": trial, "target_id": "t", "family": "ddpm", "dataset": "digits",
            "train_size": 200, "seed": 0, "epsilon": 1.0, "epsilon_spent": 0.98, "attack": "loss", "m": 64,
            "k_plus": 16, "k_minus": 16, "n_guesses": 32, "n_correct": 20, "alpha": 0.05, "delta": 1e-5,
            "n_steps": 2, "epsilon_lb": 0.9}
    write_trial_table(root, "canary_audit", trial, [{**base, "step": 0, "epsilon_lb_bonferroni": 0.3},
                                                    {**base, "step": 100, "epsilon_lb_bonferroni": 0.7}])
    report = open(analysis.write_report(root, str(tmp_path / "r")), encoding="utf-8").read()
    assert 'id="canary-audit"' in report and "20 / 32" in report and "0.7" in report
    bounds = epsilon_lower_bounds(analysis.load(root))
    assert bounds.set_index("trial_id")["epsilon_lb"].to_dict() == {trial: 0.7}
    # an audit/ table of another writer (Clopper-Pearson and GDP rows): only the CP rows count

    from mia_ray.results import SCHEMAS

    blank = dict.fromkeys(SCHEMAS["audit"].names)
    blank.pop("schema_version")
    write_trial_table(root, "audit", trial, [{**blank, "trial_id": trial, "method": "clopper_pearson",
                                              "epsilon_lb": 1.1},
                                             {**blank, "trial_id": trial, "method": "gdp", "epsilon_lb": 9.0}])
    results = analysis.load(root)
    assert epsilon_lower_bounds(results).set_index("trial_id")["epsilon_lb"].to_dict() == {trial: 1.1}
    table = privacy_utility_table(results)
    assert table["epsilon_lb"].notna().sum() == 1
    assert privacy_utility(results, str(tmp_path / "fig")) is not None


def test_report_shows_the_grids_and_the_figure(root, tmp_path):
    _with_utility(root)
    path = analysis.write_report(root, str(tmp_path / "report"))
    text = open(path, encoding="utf-8").read()
    assert 'id="samples"' in text and text.count("<figcaption>ddpm-") >= 4
    assert 'id="figure-privacy_utility"' in text
