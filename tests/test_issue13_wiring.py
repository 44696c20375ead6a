"""Issue 13 wired end to end, in-process: utility columns and grids per target, the canary audit, door checks."""

import math

import numpy as np
import pytest
import sweep_files
from sweep_files import read

from mia_ray import sweep_config
from mia_ray.audit import canary_audit_row, canary_candidates, canary_inclusion
from mia_ray.canaries import canaries_of, heldout_ids, training_ids
from mia_ray.config import CanarySpec, spec_from_json, spec_json
from mia_ray.data import make_split, open_source
from mia_ray.errors import ConfigError
from mia_ray.families import make_family
from mia_ray.training import TargetStore
from mia_ray.trial import measure_utility, run_trial
from mia_ray.utility.features import get_or_train_features
from mia_ray.utility.quality import sample_quality

UTILITY = {"samples": 32, "sampler_steps": 10, "heldout": 200}


def _sweep(tmp_path, name="u", **over):
    path = sweep_files.write_sweep(tmp_path / f"{name}.yaml", str(tmp_path / "store"), name=name, **over)
    cfg, _ = sweep_config.load(path, [f"output={tmp_path / 'out'}"])
    return cfg


def _run(cfg, trial=None):
    trials = sweep_config.expand(cfg)
    root = sweep_config.results_root(cfg)
    store = TargetStore(sweep_config.store_root(cfg))
    for t in trials if trial is None else [trial]:
        run_trial(t, cfg.name, root, store, n_boot=0, batch_size=16, progress=False)
    return trials, root, store


@pytest.fixture(scope="module")
def utility_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("utility")
    cfg = _sweep(tmp, utility=UTILITY, train_sizes=[64, 128])
    return cfg, *_run(cfg)


def test_utility_columns_are_written_finite_with_a_grid(utility_run):
    cfg, trials, root, _ = utility_run
    t = read(root, "targets")
    assert len(t) == 2
    for col in ("utility_fd", "utility_kid", "utility_kid_std"):
        assert np.isfinite(t[col]).all(), col
    assert (t["utility_fd"] > 0).all()
    assert (t["utility_n"] == 32).all() and (t["utility_sampler_steps"] == 10).all()
    # held-out: perm[max(train_sizes):], capped at utility.heldout, the same for both targets
    assert (t["utility_heldout_n"] == 200).all()
    assert t["utility_features"].str.startswith("classifier/").all()
    for trial in trials:
        with open(f"{root}/grids/{trial.trial_id}.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the DP accounting columns of a target without DP
    assert t["accountant"].isna().all() and np.isinf(t["epsilon_prv"]).all() and not t["secure_mode"].any()
    assert np.isfinite(t["heldout_loss"]).all()


def test_wired_utility_matches_a_direct_sample_quality_call(utility_run):
    cfg, trials, root, store = utility_run
    trial = trials[0]
    source = open_source(trial.spec.data)
    held = np.random.default_rng(trial.spec.seed).permutation(len(source))[128:][:200]
    members = make_split(len(source), 128, 1, trial.spec.seed).members
    assert not np.isin(held, members).any()
    np.testing.assert_array_equal(heldout_ids(trial.spec, len(source), 128, 200), held)
    net = get_or_train_features(store.root, trial.spec.data)
    target = store.get(trial.spec)
    direct = sample_quality(target.load(), make_family(trial.spec.family), 32, source.load(held), net, seed=0,
                            num_steps=10)
    row = read(root, "targets").set_index("trial_id").loc[trial.trial_id]
    assert row["utility_fd"] == pytest.approx(direct["fd"], rel=1e-9)
    assert row["utility_kid"] == pytest.approx(direct["kid"], rel=1e-9, abs=1e-12)
    assert row["utility_kid_std"] == pytest.approx(direct["kid_std"], rel=1e-9, abs=1e-12)


def test_utility_is_not_measured_again_on_resume(utility_run, monkeypatch):
    cfg, trials, root, store = utility_run
    import mia_ray.utility.quality as quality

    def boom(*a, **k):
        raise AssertionError("utility measured twice")

    monkeypatch.setattr(quality, "sample_quality", boom)
    target = store.get(trials[0].spec)
    again = measure_utility(trials[0], store, target)
    fd = read(root, "targets").set_index("trial_id").loc[trials[0].trial_id, "utility_fd"]
    assert again["fd"] == fd


def test_a_dead_writers_utility_temporaries_are_removed_by_the_rerun(utility_run):
    """kill -9 of a sweep while a utility record was written left ``.<target>-<key>.{png,json}.<hex>-<writer>.tmp``
    in the store's utility/; the rerun reading the record removes those of a writer gone from this host, keeps a
    live writer's (a concurrent sweep's) and another record's."""
    import os
    import subprocess
    import sys

    from mia_ray import store_temps

    cfg, trials, root, store = utility_run
    target = store.get(trials[0].spec)
    record = measure_utility(trials[0], store, target)
    folder = os.path.join(store.root, "utility")
    stem = f"{target.target_id}-{record['key']}"
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead, live = f"p{p.pid}@{store_temps.HOST}", store_temps.owner_tag()
    names = {"dead_png": f".{stem}.png.{'0' * 32}-{dead}.tmp", "dead_json": f".{stem}.json.{'1' * 32}-{dead}.tmp",
             "live": f".{stem}.png.{'2' * 32}-{live}.tmp", "other": f".0123456789abcdef-{record['key']}.png."
             f"{'3' * 32}-{dead}.tmp"}
    for name in names.values():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"half")
    assert measure_utility(trials[0], store, target)["fd"] == record["fd"]
    left = {n for n in os.listdir(folder) if n.endswith(".tmp")}
    assert left == {names["live"], names["other"]}
    for name in left:
        os.remove(os.path.join(folder, name))


def test_utility_off_leaves_the_columns_null(tmp_path):
    cfg = _sweep(tmp_path, utility={"enabled": False})
    (trial,) = sweep_config.expand(cfg)
    assert trial.utility is None
    _, root, _ = _run(cfg)
    assert read(root, "targets")["utility_fd"].isna().all()


# --- canaries -------------------------------------------------------------------------------------


def test_canary_spec_enters_the_id_only_when_set_and_round_trips():
    from conftest import tiny_spec

    plain = tiny_spec()
    with_c = tiny_spec(canaries=CanarySpec(16, 16))
    assert plain.target_id != with_c.target_id
    assert "canaries" not in spec_json(plain)
    assert spec_from_json(spec_json(with_c)).target_id == with_c.target_id
    assert spec_from_json(spec_json(plain)).target_id == plain.target_id


def test_canaries_lie_outside_the_split_and_are_trained_on_when_included(monkeypatch, tmp_path):
    import mia_ray.training.build as build

    cfg = _sweep(tmp_path, utility={"enabled": False}, audit={"canaries": 40})
    (trial,) = sweep_config.expand(cfg)
    source = open_source(trial.spec.data)
    split = make_split(len(source), 64, 16, 0)
    ids, inc = canaries_of(trial.spec, len(source))
    want_ids, want_inc = canary_inclusion(canary_candidates(len(source), split.members, split.nonmembers), 40, 0)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(inc, want_inc)
    assert not np.isin(ids, np.r_[split.members, split.nonmembers]).any()
    assert 0 < inc.sum() < 40
    captured = {}
    real = build.train_target

    def spy(spec, images, **kw):
        captured["images"] = images
        return real(spec, images, **kw)

    monkeypatch.setattr(build, "train_target", spy)
    _, root, _ = _run(cfg, trial)
    np.testing.assert_array_equal(captured["images"], source.load(np.r_[split.members, ids[inc]]))
    np.testing.assert_array_equal(training_ids(trial.spec, len(source)), np.r_[split.members, ids[inc]])
    # recorded in splits/: every canary, its inclusion; the members and non-members unchanged
    s = read(root, "splits")
    c = s[s["is_canary"]].sort_values("sample_id")
    np.testing.assert_array_equal(c["sample_id"], ids)
    np.testing.assert_array_equal(c["canary_included"].astype(bool), inc)
    np.testing.assert_array_equal(c["is_member"].astype(bool), inc)
    assert (~s.loc[~s["is_canary"], "sample_id"].isin(ids)).all() and len(s[~s["is_canary"]]) == 64 + 16
    # scored by every attack and step, kept out of metrics/
    sc = read(root, "scores")
    assert sc.loc[sc["is_canary"], "sample_id"].nunique() == 40
    assert (sc[sc["is_canary"]].groupby("step").size() == 40).all()
    m = read(root, "metrics")
    assert (m["n_members"] == 16).all() and (m["n_nonmembers"] == 16).all()
    # canary_audit/: one row per step, recomputable from the scores
    a = read(root, "canary_audit")
    assert len(a) == 4 and (a["m"] == 40).all() and (a["k_plus"] == 10).all() and (a["n_steps"] == 4).all()
    row = a[a["step"] == 50].iloc[0]
    scores = sc[sc["is_canary"] & (sc["step"] == 50)].sort_values("sample_id")
    want = canary_audit_row(scores["score"].to_numpy(), inc, 10, 10, 0.05, 1e-5)
    assert row["n_correct"] == want["n_correct"] and row["epsilon_lb"] == pytest.approx(want["epsilon_lb"])
    assert (a["epsilon_lb_bonferroni"] <= a["epsilon_lb"] + 1e-12).all()


def test_canary_inclusion_is_balanced_over_targets():
    from conftest import tiny_spec

    pool = 1797
    fractions = [canaries_of(tiny_spec(seed=s, canaries=CanarySpec(200, 16)), pool)[1].mean() for s in range(20)]
    assert abs(np.mean(fractions) - 0.5) < 3 * math.sqrt(0.25 / (200 * 20))


def test_the_canary_bound_of_a_dp_target_stays_below_epsilon_spent(tmp_path):
    cfg = _sweep(tmp_path, utility={"enabled": False}, audit={"canaries": 64}, epsilons=[1.0],
                 train={"steps": 20, "batch_size": 32, "lr": 0.002})
    _, root, _ = _run(cfg)
    a, t = read(root, "canary_audit"), read(root, "targets")
    spent = float(t["epsilon_spent"].iloc[0])
    assert 0 < spent < 1.5
    assert (a["epsilon_lb"] <= spent).all() and (a["epsilon_lb"] >= 0).all()


def test_an_overfitted_non_dp_target_gives_a_positive_canary_bound(tmp_path):
    cfg = _sweep(tmp_path, utility={"enabled": False}, audit={"canaries": 64, "k_plus": 12, "k_minus": 12},
                 train_sizes=[16], eval_size=16, train={"steps": 1500, "batch_size": 64, "lr": 0.002},
                 model={"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8},
                 attacks={"loss": {"steps": [50, 100]}})
    _, root, _ = _run(cfg)
    a = read(root, "canary_audit")
    print(a[["step", "n_guesses", "n_correct", "epsilon_lb", "epsilon_lb_bonferroni"]])
    assert a["epsilon_lb_bonferroni"].max() > 0.5


# --- door -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "over, key",
    [
        ({"utility": {"samples": 2}}, "utility.samples"),
        ({"utility": {"heldout": 0}}, "utility.heldout"),
        ({"utility": {"sampler_steps": 1}}, "utility.sampler_steps"),
        ({"utility": {"sampler_steps": 5000}}, "utility.sampler_steps"),
        ({"audit": {"canaries": -1}}, "audit.canaries"),
        ({"audit": {"canaries": 10, "k_plus": 8, "k_minus": 4}}, "audit.k_plus"),
        ({"audit": {"canaries": 10, "k_plus": 0, "k_minus": 0}}, "audit.k_plus"),
        ({"audit": {"canaries": 2}}, "audit.k_plus"),  # m // 4 = 0 guesses
        ({"audit": {"alpha": 1.5}}, "audit.alpha"),
    ],
)
def test_bad_utility_and_audit_config_is_refused_at_the_door(tmp_path, over, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        _sweep(tmp_path, **over)
    assert "\n" not in str(e.value)


def test_pool_checks_of_canaries_and_held_out_images(tmp_path):
    from mia_ray.preflight import check_data

    cfg = _sweep(tmp_path, audit={"canaries": 1797 - 64 - 16 + 1})
    with pytest.raises(ConfigError, match=r"audit\.canaries = 1718; allowed: at most 1717"):
        check_data(cfg)
    cfg = _sweep(tmp_path, train_sizes=[1794], eval_size=3)
    with pytest.raises(ConfigError, match="utility: the pool of 1797 images leaves 3 held-out images"):
        check_data(cfg)
    check_data(_sweep(tmp_path, train_sizes=[1794], eval_size=3, utility={"enabled": False}))


def test_an_epsilon_unreachable_on_members_plus_included_canaries_is_refused_with_the_pool(tmp_path):
    """Canaries change the DP-SGD training count (members + included canaries), so the config's budget check
    skips them; the pool check does it on the exact count, which used to fail inside the training task."""
    from mia_ray.preflight import check_data

    train = {**sweep_files.TINY["train"], "steps": 300}
    cfg = _sweep(tmp_path, epsilons=[0.05], train=train, audit={"canaries": 256}, utility={"enabled": False})
    (trial,) = sweep_config.expand(cfg)
    n = len(training_ids(trial.spec, 1797))
    assert n > 64
    line = (rf"^epsilons has 0\.05: DP-SGD with the RDP accountant cannot reach it at dp\.delta = 1e-05 over \d+ "
            rf"steps on train_size 64 \+ {n - 64} included canaries \(seed 0\) \(Opacus: .*or dp\.accountant: prv$")
    with pytest.raises(ConfigError, match=line):
        check_data(cfg)
    check_data(_sweep(tmp_path, epsilons=[0.05], train=train, dp={"accountant": "prv"}, audit={"canaries": 256},
                      utility={"enabled": False}))  # PRV reaches it
    check_data(_sweep(tmp_path, epsilons=[10], train=train, audit={"canaries": 256}, utility={"enabled": False}))


def test_the_prv_line_of_the_pool_check_is_printed_before_the_wait(tmp_path, monkeypatch, caplog):
    """check_data holds the door's warnings until every check passes (one-line refusals), but the line saying that
    PRV's calibration (seconds to minutes) is being checked must come before that wait, not after it."""
    import opacus.accountants.utils as opacus_utils

    from mia_ray.preflight import check_data

    real, seen = opacus_utils.get_noise_multiplier, []

    def timed(*a, **k):  # what the console had shown when PRV's calibration started
        if k.get("accountant") == "prv":
            seen.append([r.getMessage() for r in caplog.records])
        return real(*a, **k)

    monkeypatch.setattr(opacus_utils, "get_noise_multiplier", timed)
    train = {**sweep_files.TINY["train"], "steps": 300}
    with caplog.at_level("WARNING", logger="mia_ray"):
        check_data(_sweep(tmp_path, epsilons=[0.05], train=train, dp={"accountant": "prv"}, audit={"canaries": 256},
                          utility={"enabled": False}))
    assert seen and all(any("checking Opacus' PRV calibration" in m for m in shown) for shown in seen)
    assert sum("checking Opacus' PRV" in r.getMessage() for r in caplog.records) == len(seen)  # once each
