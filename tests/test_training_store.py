"""Training (plain, DP) and the content-addressed target store."""

import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from diffusers import UNet2DModel

from mia_ray import store_temps
from mia_ray.config import DPConfig, spec_from_json, spec_json
from mia_ray.errors import ConfigError
from mia_ray.models import load_unet
from mia_ray.training import TargetStore, get_or_train, train_target
from mia_ray.training import build as build_mod
from mia_ray.training import store as store_mod


def _outputs(unet):
    x = torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8)
    with torch.no_grad():
        return unet(x, torch.tensor([3.0, 500.0])).sample


def test_plain_training_is_deterministic(digits64):
    a = train_target(tiny_spec(steps=5), digits64, progress=False)
    b = train_target(tiny_spec(steps=5), digits64, progress=False)
    assert torch.equal(_outputs(a.unet), _outputs(b.unet))
    c = train_target(tiny_spec(steps=5, seed=1), digits64, progress=False)
    assert not torch.equal(_outputs(a.unet), _outputs(c.unet))
    assert a.train_steps == 5 and math.isfinite(a.final_loss) and a.epsilon_spent == math.inf


def test_dp_training_spends_at_most_the_target_epsilon(digits64, tmp_path):
    spec = tiny_spec(steps=6, dp=DPConfig(epsilon=5.0, delta=1e-5, max_grad_norm=1.0))
    res = train_target(spec, digits64, progress=False)
    assert math.isfinite(res.epsilon_spent) and 0 < res.epsilon_spent <= 5.0 * 1.01
    assert res.noise_multiplier > 0
    # the stored model is a plain UNet2DModel without Opacus hooks: input gradients work
    res.unet.save_pretrained(tmp_path / "m", safe_serialization=True)
    unet = load_unet(str(tmp_path / "m"))
    assert type(unet) is UNet2DModel
    assert not any(m._forward_hooks or m._backward_hooks for m in unet.modules())
    x = torch.zeros(2, 1, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(unet(x, torch.tensor([1.0, 2.0])).sample.sum(), x)
    assert torch.isfinite(g).all()


def test_ema_weights_are_what_is_saved(digits64):
    spec = tiny_spec(steps=5)
    spec.train.ema_decay = 0.5
    ema = train_target(spec, digits64, progress=False)
    spec.train.ema_decay = 0.0
    raw = train_target(spec, digits64, progress=False)
    assert not torch.equal(_outputs(ema.unet), _outputs(raw.unet))


def test_store_round_trip_and_no_retraining(tmp_path, monkeypatch, digits64):
    store = TargetStore(str(tmp_path / "store"))
    spec = tiny_spec(steps=3)
    assert store.get(spec) is None
    calls = []
    real = train_target

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(build_mod, "train_target", counting)
    first = get_or_train(store, spec, images_fn=lambda: digits64, progress=False)
    assert calls == [1] and first.trained_now and first.target_id == spec.target_id
    store2 = TargetStore(str(tmp_path / "store"))
    again = get_or_train(store2, spec, images_fn=lambda: digits64, progress=False)
    assert calls == [1] and not again.trained_now
    assert torch.equal(_outputs(first.load()), _outputs(again.load()))
    assert spec_from_json(spec_json(spec)) == spec == again.spec
    files = os.listdir(os.path.join(store.base, spec.target_id, "model"))
    assert "diffusion_pytorch_model.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)


def test_target_id_is_a_content_hash():
    a, b = tiny_spec(), tiny_spec()
    assert a.target_id == b.target_id
    b.dp.epsilon = 10.0
    c = tiny_spec(train_size=128)
    assert len({a.target_id, b.target_id, c.target_id}) == 3


def test_interrupted_write_is_not_a_stored_target(tmp_path, monkeypatch, digits64):
    store = TargetStore(str(tmp_path / "store"))
    spec = tiny_spec(steps=2)

    def crash(*a, **k):
        raise KeyboardInterrupt("simulated crash before the rename")

    monkeypatch.setattr(store_mod.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        get_or_train(store, spec, images_fn=lambda: digits64, progress=False)
    monkeypatch.undo()
    assert store.get(spec) is None  # the temporary directory is never taken as complete
    # a half-written directory under the final name (no target.json) is not complete either
    half = os.path.join(store.base, spec.target_id, "model")
    os.makedirs(half)
    assert store.get(spec) is None
    target = get_or_train(store, spec, images_fn=lambda: digits64, progress=False)
    assert target.trained_now
    meta = json.load(open(os.path.join(store.base, spec.target_id, "target.json")))
    assert meta["target_id"] == spec.target_id


def test_a_killed_writers_temporary_folder_is_removed_once_stale(tmp_path, digits64):
    """A writer killed before its rename leaves ``.tmp-<tid>-*``; the next store of that target removes it once
    it is older than STALE_SECONDS, and leaves a fresh one (a live concurrent writer's) and other targets' alone."""
    store = TargetStore(str(tmp_path / "store"))
    spec = tiny_spec(steps=2)
    tid = spec.target_id
    os.makedirs(store.base)
    old_mine, fresh_mine, old_other = (os.path.join(store.base, n) for n in
                                       (f".tmp-{tid}-dead", f".tmp-{tid}-live", ".tmp-0123456789abcdef-dead"))
    for d in (old_mine, fresh_mine, old_other):
        os.makedirs(os.path.join(d, "model"))
    hour_ago = os.path.getmtime(old_mine) - store_temps.STALE_SECONDS - 1
    for d in (old_mine, old_other):
        os.utime(d, (hour_ago, hour_ago))
    get_or_train(store, spec, images_fn=lambda: digits64, progress=False)
    assert store.get(spec) is not None
    assert not os.path.exists(old_mine) and os.path.isdir(fresh_mine) and os.path.isdir(old_other)


def test_store_trains_on_the_split_members(tmp_path):
    from mia_ray.data import make_split, open_source

    spec = tiny_spec(steps=1)
    members = build_mod.member_images(spec)
    src = open_source(spec.data)
    split = make_split(len(src), spec.train_size, 16, spec.seed)
    assert np.array_equal(members, src.load(split.members))


def test_pretrained_directory_is_a_target(tmp_path, digits64):
    res = train_target(tiny_spec(steps=1), digits64, progress=False)
    res.unet.save_pretrained(tmp_path / "pre", safe_serialization=True)
    spec = tiny_spec()
    spec = replace(spec, model=replace(spec.model, pretrained=str(tmp_path / "pre")))
    target = get_or_train(TargetStore(str(tmp_path / "store")), spec)
    assert not target.trained_now and torch.equal(_outputs(target.load()), _outputs(res.unet))
    os.remove(tmp_path / "pre" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ConfigError, match="safetensors"):
        TargetStore(str(tmp_path / "store")).get(spec)
