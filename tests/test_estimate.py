"""--estimate: the bill is arithmetic on timings (a fake timing here, so the answer is known by hand)."""

import dataclasses
import json
import math
import os

import pytest

from mia_ray import sweep, sweep_config
from mia_ray.attacks import ATTACKS
from mia_ray.errors import ConfigError
from mia_ray.estimate import Timing, bill, bill_text, done_work, measure

FULL = os.path.join(os.path.dirname(__file__), "..", "sweeps", "full_paper.yaml")
FAKE = Timing("fake", train_plain_s_per_step=1.0, train_dp_s_per_step=2.0, forward_s_per_sample=1e-3,
              backward_s_per_sample=2e-3)


def test_full_paper_bill_by_hand():
    cfg, _ = sweep_config.load(FULL, [])
    trials = sweep_config.expand(cfg)
    out = bill(trials, FAKE, cfg.family.num_steps, price_per_hour=3.0)
    h = out["device_hours"]
    # 48 targets: 12 plain (epsilon inf) at 1 s/step and 36 DP at 2 s/step, 500,000 steps each
    assert h["training"] == pytest.approx((12 * 1.0 + 36 * 2.0) * 500_000 / 3600)
    # loss: 2,000 samples x 1,000 forwards x 1 ms per target
    assert h["attack loss"] == pytest.approx(48 * 2000 * 1000 * 1e-3 / 3600)
    lik = next(a for a in trials[0].attacks if a.name == "likelihood")
    c = ATTACKS.get("likelihood")().cost(lik.params, 1000)
    assert c.backward == c.forward  # one probe in full_paper.yaml
    assert h["attack likelihood"] == pytest.approx(48 * 2000 * c.forward * (1e-3 + 2e-3) / 3600)
    assert h["total"] == pytest.approx(sum(v for k, v in h.items() if k != "total"))
    assert out["cost"]["total"] == pytest.approx(3.0 * h["total"])
    assert "attack secmi" in bill_text(out)


def test_estimate_from_json_through_the_cli(tmp_path, capsys):
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"timing": {**FAKE.__dict__, "device": "NVIDIA H200"}}))
    assert sweep.main([FULL, "--estimate-from", str(f), "--price-per-hour", "2"]) == 0
    out = capsys.readouterr().out
    assert "estimate on NVIDIA H200" in out and "training" in out and "cost" in out


@pytest.mark.parametrize("flags, line", [
    (["--price-per-hour", "2"], "error: --price-per-hour needs --estimate or --estimate-from"),
    (["--estimate-from", "T", "--price-per-hour", "-1"], "error: --price-per-hour = -1.0; allowed: a number >= 0"),
    (["--estimate-from", "T", "--price-per-hour", "nan"], "error: --price-per-hour = nan; allowed: a number >= 0"),
    (["--estimate-from", "T", "--price-per-hour", "inf"], "error: --price-per-hour = inf; allowed: a number >= 0"),
    (["--estimate-from", "T", "--estimate"], "error: --estimate with --estimate-from "),  # the file won silently
])
def test_price_flag_is_checked_before_anything_runs(tmp_path, capsys, monkeypatch, flags, line):
    """Without an estimate the price would have started the real sweep; a negative price, a negative bill."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    f = tmp_path / "t.json"
    f.write_text(json.dumps(FAKE.__dict__))
    flags = [str(f) if a == "T" else a for a in flags]
    assert sweep.main([FULL, *flags, f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


NEGATIVE = json.dumps({**FAKE.__dict__, "train_plain_s_per_step": -1})


@pytest.mark.parametrize("content", ['{"device": "x"}', "not json", NEGATIVE,
                                     json.dumps({**FAKE.__dict__, "forward_s_per_sample": True}),  # was read as 1 s
                                     json.dumps({**FAKE.__dict__, "train_dp_s_per_step": float("inf")})])
def test_bad_timing_file_is_one_line_config_error(tmp_path, content):
    f = tmp_path / "t.json"
    f.write_text(content)
    with pytest.raises(ConfigError, match="--estimate-from"):
        Timing.from_json(str(f))


def test_no_dp_targets_means_no_dp_hours():
    cfg, _ = sweep_config.load(FULL, ["epsilons=[.inf]", "train_sizes=[1000]", "families=[ddpm]"])
    out = bill(sweep_config.expand(cfg), FAKE, 1000)
    h = out["device_hours"]
    assert h["training"] == pytest.approx(500_000 / 3600) and math.isfinite(h["total"]) and "cost" not in out


def test_measure_times_the_sweeps_own_model_here():
    quick = os.path.join(os.path.dirname(__file__), "..", "sweeps", "quickstart.yaml")
    cfg, _ = sweep_config.load(quick, ["resources.batch_size=16"])
    t = measure(cfg, sweep_config.expand(cfg), device="cpu", train_steps=1)
    assert t.device.startswith("cpu")
    assert min(t.train_plain_s_per_step, t.train_dp_s_per_step, t.forward_s_per_sample, t.backward_s_per_sample) > 0


def test_the_bill_counts_what_the_plan_counts_references_canaries_and_utility():
    """LiRA trains R reference models per target and scores each beside the target; a canary audit adds its m
    canaries to every attack's samples; utility draws DDIM samples. The bill had none of them (lira_small's was
    a ninth of its LiRA scoring and none of its 24 reference trainings)."""
    here = os.path.join(os.path.dirname(__file__), "..", "sweeps")
    cfg, _ = sweep_config.load(os.path.join(here, "lira_small.yaml"), [])
    h = bill(sweep_config.expand(cfg), FAKE, 1000)["device_hours"]
    assert h["training"] == pytest.approx(3 * 300 * 1.0 / 3600)
    assert h["training LiRA references"] == pytest.approx(3 * 8 * 300 * 1.0 / 3600)  # 24 trainings, plain
    assert h["attack lira"] == pytest.approx(3 * 9 * 128 * 5 * 8 * 1e-3 / 3600)  # 5 steps x 8 draws, 1 + 8 models
    assert h["attack loss"] == pytest.approx(3 * 128 * 5 * 8 * 1e-3 / 3600)
    assert h["utility"] == pytest.approx(3 * 256 * 50 * 1e-3 / 3600)
    assert list(h)[:3] == ["training", "training LiRA references", "utility"]
    assert h["total"] == pytest.approx(sum(v for k, v in h.items() if k != "total"))
    cfg, _ = sweep_config.load(os.path.join(here, "audit_small.yaml"), ["utility.enabled=false"])
    trials = sweep_config.expand(cfg)
    h = bill(trials, FAKE, 1000)["device_hours"]
    loss = next(a for a in trials[0].attacks if a.name == "loss")
    fwd = ATTACKS.get("loss")().cost(loss.params, 1000).forward  # 4 steps x 4 draws
    assert fwd == 16 and h["attack loss"] == pytest.approx(3 * (2 * 64 + 256) * fwd * 1e-3 / 3600)
    assert "utility" not in h and "training LiRA references" not in h


def test_a_rerun_is_billed_only_for_what_it_would_still_do(tmp_path, capsys):
    """Trials complete in the results folder are not scored again, and targets or LiRA reference models complete in
    the store are not trained again: the bill of a half-done sweep was the whole sweep's."""
    from mia_ray import results
    from mia_ray.references import reference_specs
    from mia_ray.training.store import META

    here = os.path.join(os.path.dirname(__file__), "..", "sweeps")
    cfg, _ = sweep_config.load(os.path.join(here, "lira_small.yaml"), [f"output={tmp_path / 'out'}"])
    trials = sweep_config.expand(cfg)
    full = bill(trials, FAKE, 1000)["device_hours"]
    root, store = sweep_config.results_root(cfg), sweep_config.store_root(cfg)
    for table in results.TABLES:  # trial 0 complete (a partial trial would be redone in full)
        os.makedirs(os.path.join(root, table), exist_ok=True)
        open(os.path.join(root, table, f"{trials[0].trial_id}.parquet"), "w").close()
    lira = next(a for a in trials[1].attacks if a.name == "lira")
    refs = reference_specs(trials[1].spec, lira.params.references)
    for tid in (trials[1].spec.target_id, refs[0].target_id):  # trial 1's target and one reference model stored
        os.makedirs(os.path.join(store, tid))
        open(os.path.join(store, tid, META), "w").close()
    done = done_work(trials, root, store)
    assert done.trials == {trials[0].trial_id} and len(done.targets) == 2
    out = bill(trials, FAKE, 1000, done=done)
    h = out["device_hours"]
    assert h["training"] == pytest.approx(full["training"] / 3)  # trial 0 done, trial 1's target stored
    refs_per_target = full["training LiRA references"] / 3
    assert h["training LiRA references"] == pytest.approx(2 * refs_per_target - refs_per_target / 8)
    for phase in ("attack lira", "attack loss", "utility"):  # scored again for trials 1 and 2 only
        assert h[phase] == pytest.approx(full[phase] * 2 / 3)
    assert "not billed: 1 trial(s) already complete, 2 stored" in bill_text(out)
    f = tmp_path / "t.json"
    f.write_text(json.dumps(FAKE.__dict__))
    assert sweep.main([os.path.join(here, "lira_small.yaml"), "--estimate-from", str(f),
                       f"output={tmp_path / 'out'}"]) == 0
    assert "not billed: 1 trial(s) already complete, 2 stored" in capsys.readouterr().out


def test_a_remote_output_is_billed_in_full_and_says_so():
    cfg, _ = sweep_config.load(FULL, ["output=s3://bucket/prefix"])
    trials = sweep_config.expand(cfg)
    done = done_work(trials, sweep_config.results_root(cfg), sweep_config.store_root(cfg))
    assert not done.checked and not done.trials
    assert "not subtracted" in bill_text(bill(trials, FAKE, 1000, done=done))


def test_a_stored_utility_record_is_not_billed_again(tmp_path, capsys):
    """A target's utility record in the store is read by a rerun, not sampled again: the bill of a sweep whose
    trials died after measuring utility charged it in full."""
    from mia_ray.utility import target as utility_target

    here = os.path.join(os.path.dirname(__file__), "..", "sweeps")
    cfg, _ = sweep_config.load(os.path.join(here, "audit_small.yaml"), [f"output={tmp_path / 'out'}"])
    trials = sweep_config.expand(cfg)
    full = bill(trials, FAKE, 1000)["device_hours"]["utility"]
    per_target = trials[0].utility.samples * trials[0].utility.sampler_steps * FAKE.forward_s_per_sample / 3600
    assert full == pytest.approx(len({t.spec.target_id for t in trials}) * per_target)
    t = trials[1]
    assert not utility_target.is_measured(sweep_config.store_root(cfg), t.spec, t.spec.target_id, t.utility,
                                          t.heldout_from)
    key = utility_target._stored_key(t.spec, t.spec.target_id, t.utility, t.heldout_from)
    fs, meta, _ = utility_target._paths(sweep_config.store_root(cfg), t.spec.target_id, key)
    os.makedirs(os.path.dirname(meta))
    open(meta, "w").close()
    other = utility_target._stored_key(t.spec, t.spec.target_id, dataclasses.replace(t.utility, samples=128),
                                       t.heldout_from)
    assert other != key  # another setting's record is not this one
    done = done_work(trials, sweep_config.results_root(cfg), sweep_config.store_root(cfg))
    assert done.utility == {t.spec.target_id} and not done.trials and not done.targets
    out = bill(trials, FAKE, 1000, done=done)
    assert out["device_hours"]["utility"] == pytest.approx(full - per_target)
    text = bill_text(out)
    assert "1 stored utility record(s) not sampled again" in text
    assert "trial(s) already complete" not in text  # no "0 trial(s) ..., 0 stored target(s)" line
