"""Pins a tiny sweep's results, value for value, so that a refactor cannot change them silently.

A one-target digits sweep (tiny UNet trained 5 steps; the loss attack at 4 steps and the likelihood attack on
3 + 3 samples) runs in-process, without Ray, and its ``metrics/`` and ``scores/`` are compared with
``tests/data/pinned_sweep.json``, written once from the code of record (``MIA_RAY_WRITE_PINNED=1``); the
schema v2 tables ``calibrated/`` and ``audit/`` alone are (re-)recorded with ``MIA_RAY_WRITE_PINNED_V2=1``.

The tolerance is relative 1e-6, not bitwise: training and scoring are bit-identical on one machine (the
sweep's determinism promise), but float32 kernels can round differently on another CPU (MKL/oneDNN picks
code paths per instruction set), which moves scores in about the 7th digit. A real change of behaviour
(another noise key, step, split or metric) moves them by far more.
"""

import json
import math
import os

import pandas as pd
import pytest
import sweep_files
from sweep_files import read

from mia_ray import sweep_config
from mia_ray.training import TargetStore
from mia_ray.trial import run_trial

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "pinned_sweep.json")
RTOL = 1e-6
SWEEP = {
    **sweep_files.TINY,
    "attacks": {"loss": {"steps": [0, 50, 100, 999]}, "likelihood": {"max_samples": 3, "rtol": 0.01, "atol": 0.01}},
}
METRIC_KEYS = ["attack", "step", "n_members", "n_nonmembers", "auc", "auc_ci_low", "auc_ci_high", "asr",
               "tpr_at_10pct_fpr", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci_low", "tpr_at_1pct_fpr_ci_high"]
# Target ids are content hashes by which stored targets are found: a refactor must keep them (code of record).
TINY_TARGET_ID = "a33d41d7ad220671"


CALIBRATED_KEYS = ["attack", "chosen_step", "calibration_auc", "test_auc", "test_auc_ci_low", "test_auc_ci_high",
                   "fpr_target", "threshold", "calibration_fpr", "test_fp", "test_fpr", "test_fpr_ci_low",
                   "test_fpr_ci_high", "test_tp", "test_tpr", "test_tpr_ci_low", "test_tpr_ci_high", "n_cal_members",
                   "n_cal_nonmembers", "n_test_members", "n_test_nonmembers"]
AUDIT_KEYS = ["attack", "step", "method", "threshold", "direction", "tp", "fn", "fp", "tn", "fpr_high", "fnr_high",
              "mu_low", "epsilon_lb", "delta"]
_INTS = {"step", "sample_id", "n_members", "n_nonmembers", "chosen_step", "test_fp", "test_tp", "n_cal_members",
         "n_cal_nonmembers", "n_test_members", "n_test_nonmembers", "tp", "fn", "fp", "tn"}


def _records(frame, keys, order=None):
    """Rows as JSON-able dicts in a stable order; NaN and null become None."""
    order = order or ["attack", "step", *(["sample_id"] if "sample_id" in keys else [])]
    frame = frame.sort_values(order, na_position="first")
    out = []
    for row in frame[keys].to_dict("records"):
        rec = {}
        for k, v in row.items():
            if pd.isna(v):
                rec[k] = None
            elif k in _INTS:
                rec[k] = int(v)
            else:
                rec[k] = v if isinstance(v, str) else bool(v) if k == "is_member" else float(v)
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pinned")
    path = sweep_files.write_sweep(tmp / "s.yaml", str(tmp / "store"), SWEEP)
    cfg, _ = sweep_config.load(path, [f"output={tmp / 'out'}"])
    (trial,) = sweep_config.expand(cfg)
    root = sweep_config.results_root(cfg)
    run_trial(trial, cfg.name, root, TargetStore(sweep_config.store_root(cfg)), n_boot=cfg.bootstrap,
              batch_size=8, progress=False)
    got = {
        "target_id": trial.spec.target_id,
        "trial_id": trial.trial_id,
        "metrics": _records(read(root, "metrics"), METRIC_KEYS),
        "scores": _records(read(root, "scores"), ["attack", "step", "sample_id", "is_member", "score",
                                                  "statistic"]),
        # schema v2 tables, pinned when they were added (the values above were not re-recorded)
        "calibrated": _records(read(root, "calibrated"), CALIBRATED_KEYS, ["attack", "fpr_target"]),
        "audit": _records(read(root, "audit"), AUDIT_KEYS, ["attack", "method"]),
    }
    if os.environ.get("MIA_RAY_WRITE_PINNED"):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            json.dump(got, f, indent=0)
    elif os.environ.get("MIA_RAY_WRITE_PINNED_V2"):  # re-record only the v2 tables, keep the rest as recorded
        with open(GOLDEN) as f:
            golden = json.load(f)
        golden.update(calibrated=got["calibrated"], audit=got["audit"])
        with open(GOLDEN, "w") as f:
            json.dump(golden, f, indent=0)
    with open(GOLDEN) as f:
        return got, json.load(f)


def _same(a, b) -> bool:
    if a is None or b is None or isinstance(a, (str, bool)):
        return a == b
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)


def _compare(got: list, want: list, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, pinned {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.keys() == w.keys(), what
        bad = {k: (g[k], w[k]) for k in g if not _same(g[k], w[k])}
        assert not bad, f"{what} row {i} ({w.get('attack')}, step {w.get('step')}): got/pinned {bad}"


def test_target_and_trial_ids_are_pinned(pinned):
    got, want = pinned
    assert got["target_id"] == want["target_id"] == TINY_TARGET_ID
    assert got["trial_id"] == want["trial_id"] == f"ddpm-n64-epsinf-s0-{TINY_TARGET_ID[:8]}"


def test_target_ids_of_specs_are_pinned():
    from mia_ray.config import DPConfig, FamilyConfig, TargetSpec

    assert TargetSpec().target_id == "00e2824bc45988a6"
    spec = TargetSpec(dp=DPConfig(epsilon=8.0), family=FamilyConfig(name="vesde"), train_size=100, seed=2)
    assert spec.target_id == "061474e6d22e7da4"


def test_feature_net_key_is_pinned():
    """The utility's feature net (and through it every stored utility record and the targets/ column
    utility_features) is keyed by a hash of the data config: a new DataConfig field (data.members_key) changed the
    quickstart's key, so a rerun retrained the net and re-measured the utility of every stored target."""
    from mia_ray.config import DataConfig
    from mia_ray.utility.features import FeatureConfig, feature_key

    assert feature_key(DataConfig(), 1797, FeatureConfig()) == "b8c1b34d2a8e1c1e"  # the quickstart's (digits, 8 px)
    keyed = DataConfig(source="hdf5", members="/m.h5", nonmembers="/m.h5", members_key="a", nonmembers_key="b")
    assert feature_key(keyed, 10, FeatureConfig()) != feature_key(DataConfig(source="hdf5", members="/m.h5",
                                                                             nonmembers="/m.h5"), 10, FeatureConfig())


def test_metrics_are_pinned(pinned):
    got, want = pinned
    _compare(got["metrics"], want["metrics"], "metrics")


def test_scores_are_pinned(pinned):
    got, want = pinned
    _compare(got["scores"], want["scores"], "scores")


def test_calibrated_and_audit_are_pinned(pinned):
    got, want = pinned
    _compare(got["calibrated"], want["calibrated"], "calibrated")
    _compare(got["audit"], want["audit"], "audit")
