"""DP-SGD: the noise generator lives on the training device, secure mode and the accountant are options
checked at the door, every run records epsilon under RDP and PRV (recomputed here independently with
Opacus' RDP analysis and Google's dp_accounting), DP targets publish no un-noised member statistic, and
target ids of existing specs do not change."""

import hashlib
import json
import math
import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import tiny_spec

from mia_ray.config import DPConfig, SweepConfig, TargetSpec, jsonable, spec_json
from mia_ray.errors import ConfigError
from mia_ray.training import dp as dpmod
from mia_ray.training.build import heldout_images, member_images
from mia_ray.training.train import train_target


def dp_spec(epsilon=10.0, steps=3, **dp):
    spec = tiny_spec("ddpm", steps=steps)
    spec.dp = DPConfig(epsilon=epsilon, **dp)
    return spec


# --- the noise generator (issue 13 item 4) -----------------------------------------------------------


def test_noise_generator_is_on_the_requested_device_and_seeded():
    g = dpmod.noise_generator(torch.device("cpu"), 7)
    assert g.device == torch.device("cpu")
    a = torch.randn(5, generator=g)
    assert torch.equal(a, torch.randn(5, generator=dpmod.noise_generator("cpu", 7)))
    if torch.cuda.is_available():  # where a GPU is lent
        assert dpmod.noise_generator("cuda", 7).device.type == "cuda"


def test_dp_training_hands_opacus_a_generator_on_the_models_device(monkeypatch, digits64):
    from opacus import PrivacyEngine

    seen = {}
    original = PrivacyEngine.make_private_with_epsilon

    def spy(self, **kw):
        seen["generator"] = kw["noise_generator"].device
        seen["params"] = next(kw["module"].parameters()).device
        return original(self, **kw)

    monkeypatch.setattr(PrivacyEngine, "make_private_with_epsilon", spy)
    train_target(dp_spec(steps=1), digits64, device="cpu", progress=False)
    assert seen["generator"] == seen["params"] == torch.device("cpu")


# --- options at the door (issue 13 item 5, item 6) ---------------------------------------------------


def test_secure_mode_without_torchcsprng_is_refused_before_training(monkeypatch, digits64):
    monkeypatch.setattr(dpmod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"^dp\.secure_mode = true needs .*torchcsprng"):
        dpmod.validate_dp(DPConfig(secure_mode=True))
    called = []
    monkeypatch.setattr("mia_ray.training.train.build_unet", lambda *a, **k: called.append(1))
    with pytest.raises(ConfigError, match="secure_mode"):
        train_target(dp_spec(secure_mode=True), digits64, device="cpu", progress=False)
    assert not called  # nothing was built or trained


def test_unknown_accountant_is_refused_naming_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"^dp\.accountant = 'gdp'; allowed: rdp, prv$"):
        dpmod.validate_dp(DPConfig(accountant="gdp"))
    from mia_ray.sweep_config import validate

    with pytest.raises(ConfigError, match=r"^dp\.accountant"):
        validate(SweepConfig(dp=DPConfig(accountant="pld"), epsilons=[1.0]))


# --- target ids: new fields at their defaults are not hashed ----------------------------------------


def _old_target_id(spec: TargetSpec) -> str:
    """The id as computed before dp.accountant / dp.secure_mode (and the other fields of this round: canaries,
    reference, data.members / nonmembers; later dp.grad_sample_mode, model.bf16, data.members_key / nonmembers_key)
    existed."""
    d = asdict(spec)
    del d["dp"]["accountant"], d["dp"]["secure_mode"], d["dp"]["grad_sample_mode"], d["canaries"], d["reference"]
    del d["data"]["members"], d["data"]["nonmembers"], d["model"]["bf16"]
    del d["data"]["members_key"], d["data"]["nonmembers_key"]
    return hashlib.sha256(json.dumps(jsonable(d), sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def test_target_ids_of_existing_specs_are_unchanged():
    assert TargetSpec().target_id == "00e2824bc45988a6"  # pinned: ids users' stores hold
    assert TargetSpec(dp=DPConfig(epsilon=1.0)).target_id == "ee5a774522f06cc4"
    for spec in (TargetSpec(), tiny_spec("vpsde"), dp_spec(1.0), dp_spec(10.0, delta=1e-6)):
        assert spec.target_id == _old_target_id(spec)
    ids = {dp_spec(1.0).target_id, dp_spec(1.0, accountant="prv").target_id, dp_spec(1.0, secure_mode=True).target_id}
    assert len(ids) == 3  # a non-default value is a different target


# --- accountants: recomputed independently ----------------------------------------------------------


# the quickstart's DP targets: n = 64 (q = 1) and 256 (q = 0.25), 300 steps, RDP-calibrated to eps 1 and 10
@pytest.mark.parametrize("sigma,q,steps", [(70.625, 1.0, 300), (9.1796875, 1.0, 300), (17.65625, 0.25, 300),
                                           (2.44384765625, 0.25, 300)])
def test_epsilons_agree_with_independent_accountants(sigma, q, steps):
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from opacus.accountants.analysis import rdp as rdp_analysis
    from opacus.accountants.rdp import RDPAccountant

    delta = 1e-5
    got = dpmod.epsilons(sigma, q, steps, delta)
    orders = RDPAccountant.DEFAULT_ALPHAS
    eps_rdp, _ = rdp_analysis.get_privacy_spent(
        orders=orders, rdp=rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders),
        delta=delta,
    )
    assert got["rdp"] == pytest.approx(eps_rdp, rel=1e-12)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    google_rdp = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)
    assert got["rdp"] == pytest.approx(google_rdp, rel=0.01)
    pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3).compose(event).get_epsilon(delta)
    assert got["prv"] == pytest.approx(pld, rel=0.02, abs=0.02)
    assert got["prv"] < got["rdp"]  # the tighter bound


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_dp_run_records_both_epsilons_and_no_member_statistic(accountant, digits64):
    spec = dp_spec(epsilon=1.0, steps=3, accountant=accountant)
    heldout = heldout_images(spec)
    res = train_target(spec, digits64, device="cpu", progress=False, heldout=heldout)
    assert res.accountant == accountant
    assert res.epsilon_spent == pytest.approx(getattr(res, f"epsilon_{accountant}"), rel=1e-6)
    assert res.epsilon_spent <= 1.0 + 0.02  # calibrated by the chosen accountant to the target
    assert res.epsilon_prv < res.epsilon_rdp
    assert math.isnan(res.final_loss)  # an un-noised statistic of the members is not published
    assert 0 < res.heldout_loss < 10
    plain = train_target(tiny_spec("ddpm", steps=3), digits64, device="cpu", progress=False)
    assert math.isfinite(plain.final_loss) and plain.accountant == "" and plain.epsilon_rdp == math.inf


def test_prv_calibration_needs_less_noise_for_the_same_epsilon(monkeypatch):
    from opacus.accountants.utils import get_noise_multiplier

    kw = dict(target_epsilon=1.0, target_delta=1e-5, sample_rate=1.0, steps=300)
    assert get_noise_multiplier(accountant="prv", **kw) < get_noise_multiplier(accountant="rdp", **kw)


# --- held-out non-members ----------------------------------------------------------------------------


def test_heldout_images_are_non_members_of_the_target():
    spec = tiny_spec("ddpm", train_size=64)
    members, held = member_images(spec), heldout_images(spec)
    assert len(held) == 64
    flat_m = {m.tobytes() for m in members}
    assert not any(h.tobytes() in flat_m for h in held)
    np.testing.assert_array_equal(held, heldout_images(spec))  # deterministic


def test_heldout_images_of_a_lira_reference_are_outside_its_universe():
    """A reference trains on half of the universe (members + evaluation non-members of its target): its
    held-out images are pool images outside it (they were the target's non-members, half trained on by the
    reference, found by the recheck); a target's are unchanged."""
    import dataclasses

    from mia_ray.data import make_split
    from mia_ray.references import universe
    from mia_ray.training.build import heldout_loss_ids

    spec = tiny_spec("ddpm", train_size=64)
    pool = 1797
    np.testing.assert_array_equal(heldout_loss_ids(spec, pool), make_split(pool, 64, 64, spec.seed).nonmembers)
    u = universe(pool, 64, spec.seed)
    for r in range(4):
        ids = heldout_loss_ids(dataclasses.replace(spec, reference=r), pool)
        assert len(ids) == 64 and not np.isin(ids, u).any()
    big = dataclasses.replace(tiny_spec("ddpm", train_size=850), reference=1)  # 1797 - 2 x 850 = 97 left
    ids = heldout_loss_ids(big, pool)
    assert len(ids) == 97 and not np.isin(ids, universe(pool, 850, big.seed)).any()


def test_a_failing_accountant_is_recorded_as_nan_not_lost(monkeypatch, caplog):
    from opacus.accountants.prv import PRVAccountant

    def boom(self, delta, **kw):
        raise ValueError("domain too small")

    monkeypatch.setattr(PRVAccountant, "get_epsilon", boom)
    got = dpmod.epsilons(9.1796875, 1.0, 300, 1e-5)
    assert math.isnan(got["prv"]) and got["rdp"] == pytest.approx(9.991, abs=0.01)
    assert "prv accountant failed" in caplog.text


def test_model_bf16_switch_reaches_every_network_and_enters_the_id_only_when_off(monkeypatch):
    """model.bf16 (CUDA only) turns bf16 autocast off for training and scoring; at its default the ids of
    existing targets are unchanged, switched off a target gets its own id (its weights may differ)."""
    from dataclasses import replace

    from mia_ray import trial as trial_mod
    from mia_ray.config import Trial
    from mia_ray.distributed import scoring as scoring_mod
    from mia_ray.training import train as train_mod

    on = tiny_spec()
    off = replace(on, model=replace(on.model, bf16=False))
    assert on.target_id == _old_target_id(on) and off.target_id != on.target_id
    seen = []

    class Recorder:
        def __init__(self, family, unet, device=None, amp=False):
            seen.append(amp)
            raise StopIteration  # nothing is scored

    class FakeTarget:
        def load(self, device=None):
            return torch.nn.Linear(1, 1)

    class FakeStore:
        def __init__(self, root):
            pass

        def get(self, spec):
            return FakeTarget()

    monkeypatch.setattr(trial_mod, "DiffusionAdapter", Recorder)
    monkeypatch.setattr(scoring_mod, "DiffusionAdapter", Recorder)
    monkeypatch.setattr(scoring_mod, "TargetStore", FakeStore)
    for spec in (on, off):
        with pytest.raises(StopIteration):
            trial_mod.score_in_process(FakeTarget(), Trial("t", spec, 4), {"sample_id": np.arange(0)})
        with pytest.raises(StopIteration):
            scoring_mod.cached_adapter("/nowhere", spec_json(spec))
    assert seen == [True, True, False, False]
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert train_mod.uses_bf16(on, cuda) and not train_mod.uses_bf16(off, cuda)
    assert not train_mod.uses_bf16(on, cpu) and not train_mod.uses_bf16(replace(on, dp=DPConfig(epsilon=1.0)), cuda)


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ghost", "vmap"])
def test_an_empty_poisson_batch_is_a_noise_only_step_the_accountant_counts(mode, digits64, monkeypatch):
    # 16 members, expected batch 1: a Poisson batch is empty with probability (15/16)^16 = 0.36. Skipping
    # such a round (as before) left it out of the accountant's history, so ε spent under-counted the rounds run.
    from mia_ray.training.grad_sample import Backward

    empties = []
    real_empty = Backward.empty
    monkeypatch.setattr(Backward, "empty", lambda self: (empties.append(1), real_empty(self))[1])
    spec = dp_spec(epsilon=10.0, steps=12, grad_sample_mode=mode)
    spec.train.batch_size, spec.train_size = 1, 16
    res = train_target(spec, digits64[:16], device="cpu", progress=False)
    want = dpmod.epsilons(res.noise_multiplier, 1 / 16, 12, spec.dp.delta)  # all 12 rounds, q = 1 / 16
    assert res.epsilon_rdp == pytest.approx(want["rdp"], rel=1e-9)
    assert len(empties) >= 1 and res.train_steps == 12  # there were empty rounds; each was an optimiser step
    assert all(torch.isfinite(p).all() for p in res.unet.parameters())


def test_a_stored_dp_target_that_skipped_rounds_is_reused_with_a_warning(tmp_path, caplog):
    from mia_ray.training import TargetStore, get_or_train
    from mia_ray.training.store import Target

    spec = dp_spec(epsilon=10.0, steps=12)
    store = TargetStore(str(tmp_path))
    old = Target(spec.target_id, spec, str(tmp_path / spec.target_id / "model"), {"train_steps": 9})
    store.get = lambda s: old  # a target trained before empty Poisson batches became noise-only steps
    with caplog.at_level("WARNING", logger="mia_ray"):
        assert get_or_train(store, spec) is old
    assert "9 of 12 rounds" in caplog.text and "delete" in caplog.text
    old.meta["train_steps"] = 12
    caplog.clear()
    get_or_train(store, spec)
    assert "rounds" not in caplog.text


@pytest.mark.parametrize("train, dp, clip", [
    ({"lr": 1e30}, {}, "train.grad_clip (now 0; 0 = off)"),  # plain: the loss is NaN within a few steps
    ({"lr": 2e-3}, {"epsilon": 10.0, "max_grad_norm": 1e300}, "dp.max_grad_norm (now 1e+300)"),  # sigma C overflows
])
def test_a_diverging_training_is_refused_in_one_line_not_scored_as_chance(digits64, train, dp, clip):
    """A NaN / inf loss made the weights NaN and every attack then scored AUC 0.5, as if the target leaked
    nothing (train.lr = 1e300 and dp.max_grad_norm = 1e300 both finished that way)."""
    spec = tiny_spec(steps=20)
    spec.train.lr, spec.train.grad_clip = train["lr"], 0.0
    for k, v in dp.items():
        setattr(spec.dp, k, v)
    tail = re.escape(f"(train.lr = {train['lr']:g}); allowed: a smaller train.lr, or a smaller {clip}")
    line = r"^training diverged: the loss is (nan|inf) at step \d+ of 20 " + tail + "$"
    with pytest.raises(ConfigError, match=line):
        train_target(spec, digits64, progress=False)


def test_a_finite_training_is_not_refused(digits64):
    assert math.isfinite(train_target(tiny_spec(steps=5), digits64, progress=False).final_loss)
