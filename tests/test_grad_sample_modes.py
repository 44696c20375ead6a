"""dp.grad_sample_mode: every mode's DP step is the DP-SGD update recomputed here by hand — each sample's own
gradient (autograd on that sample alone), clipped at max_grad_norm, summed, plus the noise replayed from the
seeded generator, divided by the batch size — with the same accountant history; unknown modes are refused
at the door; the default leaves target ids unchanged. The UNet with attention is the case Opacus 1.6 gets
wrong without grad_sample.contiguous_conv_inputs."""

import copy
import math

import pytest
import torch
from conftest import TINY_MODEL, tiny_spec

from mia_ray.config import DPConfig, ModelConfig, SweepConfig, TargetSpec
from mia_ray.errors import ConfigError
from mia_ray.families import make_family
from mia_ray.models import NoiseNet, build_unet
from mia_ray.training import dp as dpmod
from mia_ray.training.grad_sample import MODES
from mia_ray.training.train import _make_private

ATTENTION = ModelConfig(block_out_channels=[16, 16], layers_per_block=1, attention=True, norm_num_groups=8)
B, C = 16, 0.05  # batch; a clip norm far below the per-sample gradient norms, so clipping is active


def _spec(mode, model):
    spec = tiny_spec("ddpm", steps=1, train_size=32)
    spec.model = model
    spec.train.batch_size = B
    spec.dp = DPConfig(epsilon=50.0, max_grad_norm=C, poisson=False, grad_sample_mode=mode)
    return spec


def _inputs(spec, n):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    fam = make_family(spec.family)
    return fam, x0, fam.sample_train(B, g), torch.randn(B, 1, 8, 8, generator=g)


def _reference(unet, spec, fam, x0, steps, noise, sigma):
    """(clipped sum / B, noise / B) per parameter, from per-sample autograd and a replay of the noise."""
    unet = copy.deepcopy(unet)
    params = list(unet.parameters())
    per = []
    for i in range(B):
        loss = fam.loss(NoiseNet(unet), x0[i : i + 1], steps[i : i + 1], noise[i : i + 1]).sum()
        per.append(torch.autograd.grad(loss, params))
    norms = torch.stack([torch.sqrt(sum(g.pow(2).sum() for g in gs)) for gs in per])
    assert (norms > 2 * C).all()  # every sample is clipped: a wrong norm would change the update
    factor = (C / (norms + 1e-6)).clamp(max=1.0)
    clipped = [sum(f * gs[k] for f, gs in zip(factor, per, strict=True)) / B for k in range(len(params))]
    gen = dpmod.noise_generator("cpu", spec.seed + 1)
    noises = [torch.normal(0, sigma * C, size=p.shape, generator=gen) / B for p in params]  # Opacus' order
    return clipped, noises


@pytest.mark.parametrize("model", [TINY_MODEL, ATTENTION], ids=["conv", "attention"])
@pytest.mark.parametrize("mode", list(MODES))
def test_one_dp_step_is_the_hand_computed_clipped_and_noised_update(mode, model):
    spec = _spec(mode, model)
    torch.manual_seed(0)
    unet = build_unet(spec.model, 8, 1).train()
    fam, x0, steps, noise = _inputs(spec, spec.train_size)
    data = x0
    opt = torch.optim.SGD(unet.parameters(), lr=1.0)
    start = copy.deepcopy(unet)
    dp_opt, _, engine, backward = _make_private(unet, opt, data, spec, torch.Generator().manual_seed(0), "cpu")
    sigma = dp_opt.noise_multiplier
    clipped, noises = _reference(start, spec, fam, x0[:B], steps, noise, sigma)

    dp_opt.zero_grad(set_to_none=True)
    loss = backward(fam, x0[:B], steps, noise)
    dp_opt.step()
    assert math.isfinite(float(loss))
    for p, s, z in zip(unet.parameters(), clipped, noises, strict=True):
        tol = 1e-4 * max(s.abs().max().item(), 1e-3 * C / B)  # float rounding, relative to the clipped signal
        torch.testing.assert_close(p.grad, s + z, rtol=0, atol=tol)
    assert engine.accountant.history == [(sigma, B / spec.train_size, 1)]
    assert engine.get_epsilon(spec.dp.delta) <= spec.dp.epsilon


def test_every_mode_calibrates_the_same_noise_and_spends_the_same_epsilon(digits64):
    from mia_ray.training.train import train_target

    runs = []
    for mode in MODES:
        spec = tiny_spec("ddpm", steps=2)
        spec.dp = DPConfig(epsilon=10.0, grad_sample_mode=mode)
        runs.append(train_target(spec, digits64, device="cpu", progress=False))
    assert len({(r.noise_multiplier, r.epsilon_spent, r.epsilon_rdp, r.epsilon_prv) for r in runs}) == 1
    for r in runs[1:]:  # the same seeded batches and noise: the trained weights agree to float rounding
        for a, b in zip(runs[0].unet.parameters(), r.unet.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_unknown_grad_sample_mode_is_refused_naming_the_key_and_the_allowed_ones():
    allowed = ", ".join(MODES)
    with pytest.raises(ConfigError, match=rf"^dp\.grad_sample_mode = 'ew'; allowed: {allowed}$"):
        dpmod.validate_dp(DPConfig(grad_sample_mode="ew"))
    from mia_ray.sweep_config import validate

    with pytest.raises(ConfigError, match=r"^dp\.grad_sample_mode"):
        validate(SweepConfig(dp=DPConfig(grad_sample_mode="expanded"), epsilons=[1.0]))


def test_the_default_mode_leaves_target_ids_unchanged_and_another_mode_is_another_target():
    default = DPConfig().grad_sample_mode
    assert TargetSpec().target_id == "00e2824bc45988a6"  # pinned ids (tests/test_dp_training.py)
    assert TargetSpec(dp=DPConfig(epsilon=1.0)).target_id == "ee5a774522f06cc4"
    other = next(m for m in MODES if m != default)
    assert TargetSpec(dp=DPConfig(epsilon=1.0, grad_sample_mode=other)).target_id != "ee5a774522f06cc4"



def test_opacus_conv_per_sample_gradient_still_needs_contiguous_inputs():
    """The reason for grad_sample.contiguous_conv_inputs: when this fails, Opacus reads channels_last inputs
    right and the workaround can go."""
    from opacus import GradSampleModule

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(3, 4, 4, 4).contiguous(memory_format=torch.channels_last)
    ref = torch.stack([torch.autograd.grad(conv(x[i : i + 1]).pow(2).sum(), conv.weight)[0] for i in range(3)])
    GradSampleModule(conv)(x).pow(2).sum().backward()
    assert not torch.allclose(conv.weight.grad_sample, ref, atol=1e-4)


def test_dp_targets_with_attention_get_a_new_id_and_no_other_target_does():
    """DP + attention trained differently before the contiguous-conv fix: their id changes, nothing else's does."""
    import hashlib
    import json
    from dataclasses import replace

    from mia_ray.config import DPConfig, jsonable

    def old_id(spec):  # the formula before the fix
        d = spec.to_dict()
        d["dp"] = {k: v for k, v in d["dp"].items()
                   if (k, v) not in (("accountant", "rdp"), ("secure_mode", False), ("grad_sample_mode", "hooks"))}
        d["model"].pop("bf16")
        return hashlib.sha256(json.dumps(jsonable(d), sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]

    base = tiny_spec()
    for attention in (False, True):
        for eps in (math.inf, 10.0):
            spec = replace(base, model=replace(base.model, attention=attention), dp=DPConfig(epsilon=eps))
            assert (spec.target_id != old_id(spec)) == (attention and math.isfinite(eps)), (attention, eps)
