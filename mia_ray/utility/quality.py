"""Sample quality of a target: Fréchet distance and KID between its DDIM samples and held-out images.

Both are torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` with the pool-trained
``FeatureNet`` as the feature extractor: given an ``nn.Module`` with ``num_features`` they build no
Inception network, need no torch-fidelity and download nothing (checked in torchmetrics 1.9 source and
by the tests, which run offline). With Inception weights present, ``feature=2048`` would give real FID
from the same code. KID is unbiased (the polynomial-kernel MMD of Bińkowski et al. 2018, mean and std
over random subsets); its subsets are drawn from a seeded RNG forked from the global one.

Both distances are biased estimates at finite N (FD's bias ~ 1/N): compare targets at the same
``n_samples`` and held-out set only.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from diffusers import UNet2DModel
from torch import nn

from ..errors import ConfigError
from ..families import Family
from ..models import NoiseNet
from .grid import save_grid
from .sampler import ddim_sample


def _as_tensor(images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    return x.detach().float().cpu()


class _Given(nn.Module):
    """Identity "feature extractor": lets torchmetrics take features computed once (and reused)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim  # read by FrechetInceptionDistance instead of probing a 299x299 image

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def features_of(feature_net: nn.Module, images, batch_size: int = 512) -> torch.Tensor:
    """``feature_net`` features [N, d] (float64, CPU) of images [N, C, H, W] in [-1, 1]."""
    x = _as_tensor(images)
    device = next(feature_net.parameters()).device
    out = [feature_net(x[lo : lo + batch_size].to(device)).double().cpu() for lo in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, feature_net.num_features, dtype=torch.float64)


def feature_distances(real: torch.Tensor, fake: torch.Tensor, seed: int = 0, kid_subsets: int = 100) -> dict:
    """Fréchet distance and KID (mean, std over subsets) between feature sets [N, d] and [M, d].

    The KID subset size is min(1000, smaller set // 2): subsets of the full set would all be equal
    (std 0); half leaves the std meaningful at a few hundred samples.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n_min = min(len(real), len(fake))
    if n_min < 4:
        raise ConfigError(f"utility: {len(real)} held-out and {len(fake)} generated images; allowed: at least 4 each")
    given = _Given(real.shape[1])
    fid = FrechetInceptionDistance(feature=given, reset_real_features=True)
    with warnings.catch_warnings():  # "KID keeps all features in memory": a few thousand x d floats here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=given, subsets=kid_subsets, subset_size=min(1000, n_min // 2))
    for feats, is_real in ((real, True), (fake, False)):
        fid.update(feats.double(), real=is_real)
        kid.update(feats.double(), real=is_real)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets with torch.randperm
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fd": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


def image_distances(feature_net: nn.Module, real, fake, seed: int = 0) -> dict:
    """Fréchet distance and KID between image sets ``real`` and ``fake`` on ``feature_net``'s features."""
    return feature_distances(features_of(feature_net, real), features_of(feature_net, fake), seed)


def _net_device_amp(model, device, amp):
    """(net(x, tau) -> eps_hat, device, amp) of a DiffusionAdapter, a UNet2DModel or such a net."""
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "net", None), nn.Module):
        # an attack adapter (duck-typed: .net, .device, .amp): sample exactly what the attacks score
        return model.net, torch.device(getattr(model, "device", device or "cpu")), getattr(model, "amp", amp)
    if isinstance(model, UNet2DModel):
        model = NoiseNet(model)
    if isinstance(model, nn.Module):
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        return model.to(dev).eval(), dev, amp
    return model, torch.device(device or "cpu"), amp


def sample_quality(model, family: Family, n: int, heldout_images, feature_net: nn.Module, seed: int = 0,
                   num_steps: int = 50, batch_size: int = 256, device=None, amp: bool = False,
                   grid_path: str | None = None, grid_count: int = 64,
                   heldout_features: torch.Tensor | None = None) -> dict:
    """Generate ``n`` DDIM samples of ``model`` and compare them with ``heldout_images`` on ``feature_net``.

    ``model``: a DiffusionAdapter, a UNet2DModel, or a callable ``net(x, tau) -> eps_hat``. Writes a grid
    of the first ``grid_count`` samples to ``grid_path`` when given; ``heldout_features`` (from
    ``features_of``) saves recomputing the held-out features for every target. Returns ``fd``, ``kid``,
    ``kid_std``, ``n_samples``, ``n_heldout``, ``sampler_steps``, ``sample_seconds``, ``distance_seconds``.
    """
    heldout = _as_tensor(heldout_images)
    if heldout_features is not None and len(heldout_features) != len(heldout):
        raise ValueError(f"sample_quality: {len(heldout_features)} held-out features for {len(heldout)} images")
    net, device, amp = _net_device_amp(model, device, amp)
    t0 = time.monotonic()
    samples = ddim_sample(net, family, n, tuple(heldout.shape[1:]), seed=seed, num_steps=num_steps,
                          batch_size=batch_size, device=device, amp=amp).cpu()
    t1 = time.monotonic()
    real = heldout_features if heldout_features is not None else features_of(feature_net, heldout)
    out = feature_distances(real, features_of(feature_net, samples), seed=seed)
    out.update(n_samples=n, n_heldout=len(heldout), sampler_steps=num_steps,
               sample_seconds=t1 - t0, distance_seconds=time.monotonic() - t1)
    if grid_path is not None:
        save_grid(samples[:grid_count], grid_path)
    return out


__all__ = ["feature_distances", "features_of", "image_distances", "sample_quality"]
