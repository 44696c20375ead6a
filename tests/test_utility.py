"""Utility of a target: the DDIM sampler, the pool-trained feature net, FD / KID and the sample grid."""

import json
import os
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import tiny_spec
from PIL import Image

from mia_ray import noise as keyed
from mia_ray.attacks.adapter import DiffusionAdapter
from mia_ray.config import DataConfig, FamilyConfig
from mia_ray.data import make_split, open_source
from mia_ray.errors import ConfigError
from mia_ray.families import make_family
from mia_ray.models import build_unet
from mia_ray.training import member_images, train_target
from mia_ray.utility.features import FeatureConfig, get_or_train_features, load_features, train_features
from mia_ray.utility.grid import save_grid
from mia_ray.utility.quality import feature_distances, features_of, image_distances, sample_quality
from mia_ray.utility.sampler import SAMPLER_TAG, ddim_sample, ddim_steps

MU, SIGMA = 0.2, 0.2  # Gaussian data N(MU, SIGMA^2 I): inside [-1, 1] to 4 sigma, so clipping is negligible


def gaussian_oracle(fam):
    """The exact eps_hat of Gaussian data: s (x - a mu) / (a^2 sigma^2 + s^2), called as the families call a net."""

    def net(xin, tau):
        t = tau.double() / (fam.T - 1)  # tau = t (T - 1); step_time maps steps back to t
        steps = (t * (fam.T - 1)).round() if fam.discrete else t * fam.T
        a, s = (c.view(-1, 1, 1, 1) for c in fam.step_mean_std(steps))
        x = xin.double() / fam.c_in(s)
        return (s * (x - a * MU) / (a**2 * SIGMA**2 + s**2)).float()

    return net


def exact_ddim_map(fam, num_steps, eps):
    """Closed form of K DDIM steps on Gaussian data, from the start x = s_{T-1} eps.

    With r = (x - a mu) / |(a sigma, s)| and theta = atan2(s, a sigma), one step maps r_u to
    r_v = cos(theta_u - theta_v) r_u, and the final x0_hat = mu + sigma cos(theta_0) r_0.
    """
    steps = ddim_steps(fam, num_steps)
    a, s = (c.double() for c in fam.step_mean_std(steps))
    theta = torch.atan2(s, a * SIGMA)
    r = (s[0] * eps.double() - a[0] * MU) / torch.hypot(a[0] * SIGMA, s[0])
    shrink = torch.cos(theta[:-1] - theta[1:]).prod() * torch.cos(theta[-1])
    return MU + SIGMA * shrink * r


@pytest.mark.parametrize("family", ["ddpm", "smld", "vpsde", "vesde"])
@pytest.mark.parametrize("num_steps", [10, 100])
def test_ddim_is_the_exact_map_on_gaussian_data(family, num_steps):
    fam = make_family(FamilyConfig(name=family))
    n, shape = 256, (1, 4, 4)
    x = ddim_sample(gaussian_oracle(fam), fam, n, shape, seed=3, num_steps=num_steps)
    eps = keyed.normal(keyed.combine(3, torch.arange(n), SAMPLER_TAG), shape)
    want = exact_ddim_map(fam, num_steps, eps).clamp(-1, 1).float()
    torch.testing.assert_close(x, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["ddpm", "vesde"])  # one VP, one VE
def test_ddim_samples_approach_the_data_distribution(family):
    fam = make_family(FamilyConfig(name=family))
    n, shape = 2000, (1, 4, 4)  # 32000 draws: std of the std estimate ~0.4%
    coarse = ddim_sample(gaussian_oracle(fam), fam, n, shape, seed=0, num_steps=10)
    fine = ddim_sample(gaussian_oracle(fam), fam, n, shape, seed=0, num_steps=fam.T)
    assert abs(fine.mean().item() - MU) < 0.005
    assert abs(fine.std().item() / SIGMA - 1) < 0.015
    assert abs(coarse.std().item() / SIGMA - 1) > 0.1  # few steps contract the spread: the test can fail


def test_samples_do_not_depend_on_the_batch():
    fam = make_family(FamilyConfig(name="vpsde"))
    net = gaussian_oracle(fam)
    whole = ddim_sample(net, fam, 20, (1, 4, 4), seed=1, num_steps=8, batch_size=64)
    assert torch.equal(ddim_sample(net, fam, 20, (1, 4, 4), seed=1, num_steps=8, batch_size=7), whole)
    tail = ddim_sample(net, fam, 5, (1, 4, 4), seed=1, num_steps=8, first_id=15)
    assert torch.equal(tail, whole[15:])
    assert not torch.equal(ddim_sample(net, fam, 20, (1, 4, 4), seed=2, num_steps=8), whole)


def test_ddim_steps_grid_and_bad_step_counts():
    fam = make_family(FamilyConfig(name="ddpm"))
    grid = ddim_steps(fam, 50)
    assert grid[0] == fam.T - 1 and grid[-1] == 0 and len(grid) == 50 and (grid.diff() < 0).all()
    assert torch.equal(ddim_steps(fam, fam.T), torch.arange(fam.T - 1, -1, -1))
    for bad in (1, fam.T + 1, 2.5):
        with pytest.raises(ConfigError, match="utility.sampler_steps"):
            ddim_steps(fam, bad)


# --- the feature net ------------------------------------------------------------------------------

DIGITS = DataConfig(source="digits", resolution=8, channels=1)


@pytest.fixture(scope="module")
def feature_net(store_dir):
    return get_or_train_features(store_dir, DIGITS)


@pytest.fixture(scope="module")
def pool():
    return open_source(DIGITS).load(np.arange(1797))


def test_classifier_features_separate_the_digit_classes(feature_net, pool):
    assert feature_net.meta["objective"] == "classifier" and feature_net.meta["num_classes"] == 10
    assert feature_net.meta["heldout_accuracy"] > 0.9  # on 180 pool images the net never trained on
    f = feature_net(torch.from_numpy(pool))
    assert f.shape == (1797, feature_net.num_features)
    assert abs(f.pow(2).mean().item() - 1) < 0.1  # scaled to O(1) per dimension for KID's kernel


def test_feature_net_is_stored_once_and_reloads_identically(store_dir, feature_net, pool, monkeypatch):
    from mia_ray.utility import features as features_mod

    monkeypatch.setattr(features_mod, "train_features", lambda *a, **k: pytest.fail("retrained"))
    again = get_or_train_features(store_dir, DIGITS)
    x = torch.from_numpy(pool[:50])
    assert torch.equal(again(x), feature_net(x))
    where = os.path.join(store_dir, "features", feature_net.meta["key"])
    assert sorted(os.listdir(where)) == ["meta.json", "model.safetensors"]
    assert json.load(open(os.path.join(where, "meta.json")))["heldout_accuracy"] == feature_net.meta["heldout_accuracy"]
    assert not [p for p in os.listdir(os.path.dirname(where)) if p.startswith(".tmp")]
    assert torch.equal(load_features(store_dir, feature_net.meta["key"])(x), feature_net(x))


def test_feature_training_is_seeded(pool):
    labels = np.arange(200) % 10
    runs = [train_features(pool[:200], labels, FeatureConfig(steps=5, seed=s))[0] for s in (0, 0, 1)]
    x = torch.from_numpy(pool[:20])
    assert torch.equal(runs[0](x), runs[1](x)) and not torch.equal(runs[0](x), runs[2](x))


def test_unlabelled_sources_fall_back_to_an_autoencoder(tmp_path, pool):
    np.savez(tmp_path / "pool.npz", images=pool[:600])
    data = DataConfig(source="npz", path=str(tmp_path / "pool.npz"), resolution=8, channels=1)
    with pytest.raises(ConfigError, match="utility.features.objective"):
        get_or_train_features(str(tmp_path / "s"), data, FeatureConfig(objective="classifier"))
    assert not os.path.exists(tmp_path / "s" / "features")
    net = get_or_train_features(str(tmp_path / "s"), data, FeatureConfig(steps=200))
    assert net.meta["objective"] == "autoencoder"
    mean_image_mse = float(((pool[:600] - pool[:600].mean(0)) ** 2).mean())
    assert net.meta["heldout_mse"] < 0.5 * mean_image_mse  # the bottleneck carries the image


# --- distances ------------------------------------------------------------------------------------


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(300, 6)), rng.normal(size=(200, 6)) * 1.5 + 0.3
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    want = ((fa.mean(0) - fb.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    got = feature_distances(torch.from_numpy(fa), torch.from_numpy(fb))
    assert got["fd"] == pytest.approx(want, rel=1e-4)
    # KID averages unbiased MMD^2 over random subsets: its expectation is the full-set unbiased MMD^2
    k = lambda x, y: (x @ y.T / 6 + 1) ** 3  # noqa: E731  (the polynomial kernel of KID)
    kxx, kyy = k(fa, fa), k(fb, fb)
    mmd2 = ((kxx.sum() - np.trace(kxx)) / (300 * 299) + (kyy.sum() - np.trace(kyy)) / (200 * 199)
            - 2 * k(fa, fb).mean())
    assert mmd2 > 0.5 and abs(got["kid"] - mmd2) < 4 * got["kid_std"] / np.sqrt(100)


def test_distances_are_offline_zero_on_itself_and_order_data_and_noise(feature_net, pool, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    same = image_distances(feature_net, pool[:600], pool[:600])
    halves = image_distances(feature_net, pool[:800], pool[800:1600])
    noise = np.clip(np.random.default_rng(0).normal(size=(800, 1, 8, 8)), -1, 1).astype(np.float32)
    far = image_distances(feature_net, pool[:800], noise)
    assert abs(same["fd"]) < 1e-6
    assert halves["fd"] < 0.1 * far["fd"] and halves["kid"] < 0.1 * far["kid"]
    assert far["kid"] > 10 * far["kid_std"]
    assert image_distances(feature_net, pool[:800], noise, seed=5) == image_distances(
        feature_net, pool[:800], noise, seed=5
    )


def test_trained_target_samples_are_closer_to_the_data_than_untrained_ones(feature_net, pool):
    spec = tiny_spec("ddpm", steps=300)
    trained = train_target(spec, member_images(spec), progress=False).unet
    torch.manual_seed(0)
    untrained = build_unet(spec.model, 8, 1).eval()
    members = make_split(1797, spec.train_size, 1, spec.seed, "").members
    heldout = pool[np.setdiff1d(np.arange(1797), members)]
    fam = make_family(spec.family)
    good = sample_quality(trained, fam, 128, heldout, feature_net, num_steps=20)
    bad = sample_quality(untrained, fam, 128, heldout, feature_net, num_steps=20)
    assert good["fd"] < 0.6 * bad["fd"] and good["kid"] < 0.6 * bad["kid"]
    assert good["n_samples"] == 128 and good["n_heldout"] == len(heldout) == 1797 - 64


def test_sample_quality_takes_an_adapter_or_a_unet_and_writes_a_grid(feature_net, pool, tmp_path):
    torch.manual_seed(0)
    unet = build_unet(tiny_spec().model, 8, 1).eval()
    fam = make_family(FamilyConfig(name="vesde"))
    kw = dict(n=16, heldout_images=pool[:64], feature_net=feature_net, seed=4, num_steps=3)
    via_unet = sample_quality(unet, fam, grid_path=str(tmp_path / "g.png"), **kw)
    via_adapter = sample_quality(DiffusionAdapter(fam, unet), fam, **kw)
    cached = sample_quality(unet, fam, heldout_features=features_of(feature_net, pool[:64]), **kw)
    for key in ("fd", "kid", "kid_std", "n_samples"):
        assert via_unet[key] == via_adapter[key] == cached[key]
    assert Image.open(tmp_path / "g.png").size == (4 * 8 * 4 + 5 * 4,) * 2  # 4x4 tiles of 8 px + pad, x4


# --- the grid -------------------------------------------------------------------------------------


def test_save_grid_maps_pixels_and_writes_atomically(tmp_path):
    images = torch.tensor([-1.0, 1.0, 0.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    path = save_grid(images, str(tmp_path / "sub" / "grid.png"), ncol=3, min_tile=2)
    arr = np.asarray(Image.open(path))
    assert arr.shape == (4, 10)  # 1 row x 3 tiles of 2 px, 1 px pad around each
    assert arr[1, 1] == 0 and arr[1, 4] == 255 and arr[1, 7] == 128 and arr[0, 0] == 255  # pad is white
    assert os.listdir(tmp_path / "sub") == ["grid.png"]
    with pytest.raises(ValueError, match="save_grid"):
        save_grid(torch.zeros(2, 2, 4, 4), str(tmp_path / "bad.png"))
    assert not (tmp_path / "bad.png").exists()
