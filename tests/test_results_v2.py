"""Schema v2 wired end to end: ``calibrated/``, ``audit/`` and ``splits.in_calibration`` written by a tiny
in-process trial agree with an independent recomputation from the written ``scores/`` and ``splits/``; a null
with uninformative labels through the same path stays at chance; the epsilon lower bound of a DP target stays
below its spent epsilon, and an over-fitted target without DP proves a clearly positive one."""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_spec
from scipy import stats
from sweep_files import read

from mia_ray import results
from mia_ray.attacks.loss import LossParams
from mia_ray.config import AttackSpec, DPConfig, Trial
from mia_ray.metrics import FPR_TARGETS
from mia_ray.training import TargetStore
from mia_ray.trial import calibrated_tables, run_trial

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module

STEPS = [0, 50, 100, 999]



def _trial(spec, eval_size, steps=STEPS) -> Trial:
    eps = "inf" if math.isinf(spec.dp.epsilon) else f"{spec.dp.epsilon:g}"
    tid = f"{spec.family.name}-n{spec.train_size}-eps{eps}-s{spec.seed}-{spec.target_id[:8]}"
    return Trial(tid, spec, eval_size, [AttackSpec("loss", LossParams(steps=steps))])


def _run(tmp_path, spec, eval_size, steps=STEPS) -> str:
    root = str(tmp_path / "out" / "v2")
    run_trial(_trial(spec, eval_size, steps), "v2", root, TargetStore(str(tmp_path / "store")), n_boot=20,
              batch_size=32, progress=False)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny DP target (5 DP-SGD steps, 16 + 16 evaluation samples): its results root."""
    return _run(tmp_path_factory.mktemp("dp"), tiny_spec(steps=5, dp=DPConfig(epsilon=1.0)), 16)


def _auc(s, m) -> float:
    """AUC by counting pairs (ties half), NaN scores as -inf."""
    s = np.where(np.isnan(s), -np.inf, s)
    pos, neg = s[m], s[~m]
    return ((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (pos.size * neg.size)


def _cp(k, n, level=0.95):
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else stats.beta.ppf(a, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - a, k + 1, n - k)
    return lo, hi


def test_written_tables_have_schema_v2_and_stratified_halves(tiny):
    for table in ("metrics", "scores", "splits", "targets", "calibrated", "audit"):
        assert set(read(tiny, table)["schema_version"]) == {results.SCHEMA_VERSION}, table
    splits = read(tiny, "splits")
    scored = splits[splits["in_eval"]]
    assert scored["in_calibration"].notna().all() and splits.loc[~splits["in_eval"], "in_calibration"].isna().all()
    counts = scored.groupby(["is_member", "in_calibration"]).size()
    assert counts.tolist() == [8, 8, 8, 8], counts  # 16 + 16 scored: 8 of each class per half


def test_calibrated_rows_match_a_recomputation_from_scores_and_splits(tiny):
    scores, splits, cal = read(tiny, "scores"), read(tiny, "splits"), read(tiny, "calibrated")
    half = dict(zip(splits["sample_id"], splits["in_calibration"], strict=True))
    scores = scores.assign(cal=scores["sample_id"].map(half).astype(bool))
    c = scores[scores["cal"]]
    by_step = {st: _auc(g["score"].to_numpy(), g["is_member"].to_numpy()) for st, g in c.groupby("step")}
    best = max(by_step.values())
    step = min(st for st, a in by_step.items() if a == best)  # ties -> lower step
    assert len(cal) == len(FPR_TARGETS) and (cal["chosen_step"] == step).all()
    assert cal["calibration_auc"].iloc[0] == pytest.approx(best)
    at = scores[scores["step"] == step]
    cal_nm = at.loc[at["cal"] & ~at["is_member"], "score"].to_numpy()
    test = at[~at["cal"]]
    pos, neg = test.loc[test["is_member"], "score"].to_numpy(), test.loc[~test["is_member"], "score"].to_numpy()
    assert cal["test_auc"].iloc[0] == pytest.approx(_auc(test["score"].to_numpy(), test["is_member"].to_numpy()))
    for row in cal.itertuples():
        k = math.floor(row.fpr_target * cal_nm.size + 1e-9)
        if k == 0:
            assert math.isnan(row.threshold) and pd.isna(row.test_tp)
            continue
        # the threshold: the smallest calibration non-member score with at most k scores at or above it
        ok = [v for v in np.unique(cal_nm) if (cal_nm >= v).sum() <= k]
        assert row.threshold == min(ok)
        fp, tp = int((neg >= row.threshold).sum()), int((pos >= row.threshold).sum())
        assert (row.test_fp, row.test_tp) == (fp, tp)
        assert row.test_fpr == fp / neg.size and row.test_tpr == tp / pos.size
        assert (row.test_fpr_ci_low, row.test_fpr_ci_high) == pytest.approx(_cp(fp, neg.size))
        assert (row.test_tpr_ci_low, row.test_tpr_ci_high) == pytest.approx(_cp(tp, pos.size))


def test_audit_rows_match_counts_and_scipy_and_stay_below_epsilon_spent(tiny):
    scores, splits, audit = read(tiny, "scores"), read(tiny, "splits"), read(tiny, "audit")
    cal = read(tiny, "calibrated")
    targets = read(tiny, "targets")
    spent, delta = float(targets["epsilon_spent"].iloc[0]), float(targets["delta"].iloc[0])
    assert 0 < spent < math.inf
    assert sorted(audit["method"]) == ["clopper_pearson", "gdp"]
    assert (audit["step"] == cal["chosen_step"].iloc[0]).all() and (audit["delta"] == delta).all()
    half = dict(zip(splits["sample_id"], splits["in_calibration"], strict=True))
    at = scores[(scores["step"] == audit["step"].iloc[0]) & ~scores["sample_id"].map(half).astype(bool)]
    pos, neg = at.loc[at["is_member"], "score"].to_numpy(), at.loc[~at["is_member"], "score"].to_numpy()
    for row in audit.itertuples():
        tp, fp = int((pos >= row.threshold).sum()), int((neg >= row.threshold).sum())
        assert (row.tp, row.fn, row.fp, row.tn) == (tp, pos.size - tp, fp, neg.size - fp)
        assert row.epsilon_spent == spent
    row = audit[audit["method"] == "clopper_pearson"].iloc[0]
    a = row["alpha"] / 2
    fpr_hi = 1.0 if row["fp"] == neg.size else stats.beta.ppf(1 - a, row["fp"] + 1, neg.size - row["fp"])
    fnr_hi = 1.0 if row["fn"] == pos.size else stats.beta.ppf(1 - a, row["fn"] + 1, pos.size - row["fn"])
    cands = [0.0]
    for num, den in ((1 - fnr_hi - delta, fpr_hi), (1 - fpr_hi - delta, fnr_hi)):
        if num > 0:
            cands.append(math.log(num / den))
    assert row["epsilon_lb"] == pytest.approx(max(cands))
    assert row["epsilon_lb"] <= spent  # a bound above the spent epsilon would be a failed DP claim


def _null_trial(n: int) -> tuple[Trial, SimpleNamespace]:
    spec = tiny_spec(train_size=n)
    members, nonmembers = np.arange(n), np.arange(n, 2 * n)
    return _trial(spec, n, [10, 20, 30]), SimpleNamespace(members=members, eval_members=members,
                                                          nonmembers=nonmembers)


def test_null_labels_through_the_wired_path_give_tpr_near_fpr():
    """Scores independent of membership: calibrated TPR ~ FPR, realized FPR near the target, no epsilon."""
    n, reps = 200, 200
    trial, split = _null_trial(n)
    halves = results.calibration_split(trial, split)
    keys = results.trial_keys("null", trial.trial_id, "t")
    rng = np.random.default_rng(0)
    ids = np.r_[split.eval_members, split.nonmembers]
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    rows, bounds = [], []
    for _ in range(reps):
        steps = [10, 20, 30]
        scores = {"sample_id": np.tile(ids, 3), "is_member": np.tile(member, 3), "attack": ["loss"] * (6 * n),
                  "step": np.repeat(steps, 2 * n), "score": rng.normal(size=6 * n), "statistic": np.zeros(6 * n)}
        out = calibrated_tables(keys, trial, {"epsilon_spent": math.inf}, scores, halves, n_boot=0)
        rows += out["calibrated"]
        bounds += [r["epsilon_lb"] for r in out["audit"] if r["method"] == "clopper_pearson"]
    cal = pd.DataFrame(rows)
    for target in (0.1, 0.01):
        d = cal[cal["fpr_target"] == target]
        assert abs(d["test_tpr"].mean() - target) < 0.25 * target + 0.005, (target, d["test_tpr"].mean())
        assert abs(d["test_fpr"].mean() - target) < 0.25 * target + 0.005, (target, d["test_fpr"].mean())
        covered = ((d["test_fpr_ci_low"] <= target) & (target <= d["test_fpr_ci_high"])).mean()
        assert covered > 0.7, (target, covered)  # ~0.83 expected with equal halves (docs/audit.md)
        within = ((d["test_tpr_ci_low"] <= target) & (target <= d["test_tpr_ci_high"])).mean()
        assert within > 0.7, (target, within)
    assert (cal["test_auc"] - 0.5).abs().mean() < 0.05
    assert np.mean(np.array(bounds) > 0) <= 0.1, np.mean(np.array(bounds) > 0)  # alpha = 0.05


def test_overfitted_target_without_dp_proves_a_positive_epsilon(tmp_path_factory):
    """64 members trained 500 steps (the over-fitted model of test_attacks), 64 + 64 scored: 32 + 32 test half."""
    root = _run(tmp_path_factory.mktemp("overfit"), tiny_spec(steps=500), 64, [25, 50, 100, 200])
    audit, cal = read(root, "audit"), read(root, "calibrated")
    cp_row = audit[audit["method"] == "clopper_pearson"].iloc[0]
    assert cal["test_auc"].iloc[0] > 0.8, cal.iloc[0].to_dict()
    assert cp_row["epsilon_lb"] > 0.5, cp_row.to_dict()
    assert math.isinf(cp_row["epsilon_spent"])


def test_v2_results_report_and_print_calibrated_and_audit_figures(tiny, tmp_path):
    import analysis
    from analysis.findings import check

    r = analysis.load(tiny)
    assert len(r.calibrated) == len(FPR_TARGETS) and len(r.audit) == 2
    path, tables = analysis.report.build_report(r, str(tmp_path / "report"))
    html = open(path, encoding="utf-8").read()
    assert {"calibrated", "epsilon_audit"} <= set(tables) and 'id="figure-epsilon_audit"' in html
    # a stepless attack's null step beside a stepped one: the table keeps integer steps ("999", not "999.0")
    stepless = r.calibrated.assign(attack="stepless", chosen_step=float("nan"))
    both = dataclasses.replace(r, calibrated=pd.concat([r.calibrated, stepless], ignore_index=True))
    steps = analysis.calibrated.calibrated_table(both).set_index("attack")["chosen_step"]
    assert str(steps.dtype) == "Int64" and steps.isna()["stepless"].all(), steps
    assert steps.drop("stepless").astype(str).str.isdigit().all(), steps
    assert "test AUC (95% CI)" in html and "ε LB (Clopper–Pearson)" in html
    found = check(r)[1]
    assert found[-1].claim.startswith("DP claims hold") and found[-1].holds is True
    text, _ = analysis.finish(tiny, report=False)
    spent = float(read(tiny, "targets")["epsilon_spent"].iloc[0])
    assert "test-half AUC at the step chosen on the calibration half" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("ddpm-"))
    assert row[1:4] == [f"{spent:.3g}", "0", "|"], row  # ε spent, then the Clopper–Pearson bound of this DP target
