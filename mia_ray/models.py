"""The target network: a diffusers UNet2DModel sized from config, or loaded from a directory."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch
from diffusers import UNet2DModel

from .config import ModelConfig
from .errors import ConfigError

WEIGHTS = "diffusion_pytorch_model.safetensors"
MIN_SAMPLE_SIZE = 4  # count_parameters' sample size (data.base.MIN_RESOLUTION): it does not change the count
ATTENTION_HEAD_DIM = 8  # channels per attention head: the last level needs at least this many (the door checks)


def build_unet(cfg: ModelConfig, sample_size: int, channels: int) -> UNet2DModel:
    """A fresh UNet2DModel; attention (if on) sits in the lowest-resolution level and the mid block."""
    levels = len(cfg.block_out_channels)
    last_down = "AttnDownBlock2D" if cfg.attention else "DownBlock2D"
    last_up = "AttnUpBlock2D" if cfg.attention else "UpBlock2D"
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * (levels - 1) + (last_down,),
        up_block_types=(last_up,) + ("UpBlock2D",) * (levels - 1),
        add_attention=cfg.attention,
        norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=ATTENTION_HEAD_DIM,
    )


def count_parameters(cfg: ModelConfig, channels: int) -> int:
    """The parameters of :func:`build_unet`'s network, counted without allocating them (built on torch's meta
    device: ~20 ms for full_paper's 35.7M-parameter UNet, ~6 ms for a 1.1e12-parameter one, measured).
    A ``ConfigError`` naming the model keys when diffusers cannot build it."""
    try:
        return meta_count(lambda: build_unet(cfg, MIN_SAMPLE_SIZE, channels))
    except Exception as e:  # diffusers raises ValueError, ZeroDivisionError, ... for shapes it cannot build
        raise ConfigError(
            f"model.block_out_channels = {list(cfg.block_out_channels)} with model.layers_per_block = "
            f"{cfg.layers_per_block}, model.attention = {cfg.attention}, model.norm_num_groups = "
            f"{cfg.norm_num_groups}: diffusers cannot build this UNet2DModel ({type(e).__name__}: "
            f"{' '.join(str(e).split())})"
        ) from None


def meta_count(build) -> int:
    """The parameters of the module ``build()`` makes, built on torch's meta device: nothing is allocated."""
    with torch.device("meta"), quiet_diffusers():
        return count_params(build())


def load_unet(path: str, device: str | torch.device = "cpu", key: str = "model.pretrained") -> UNet2DModel:
    """Load a UNet2DModel directory from safetensors only (never unpickles), strictly: a weight file that does
    not hold exactly the model's tensors is refused with one line (diffusers would only warn and leave
    random weights)."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"{key}: {path!r} is not a diffusers UNet2DModel directory (no config.json)")
    if not os.path.isfile(os.path.join(path, WEIGHTS)):
        raise ConfigError(f"{key}: {path!r} has no {WEIGHTS} (only safetensors weights are loaded)")
    try:
        with quiet_diffusers():
            unet, info = UNet2DModel.from_pretrained(
                path, use_safetensors=True, low_cpu_mem_usage=False, output_loading_info=True
            )
    except Exception as e:  # diffusers raises OSError, ValueError, EnvironmentError, ... for bad directories
        raise ConfigError(
            f"{key}: cannot load {path!r} as a UNet2DModel ({type(e).__name__}: {' '.join(str(e).split())})"
        ) from None
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(what):
            first = info[what][0]
            raise ConfigError(
                f"{key}: {os.path.join(path, WEIGHTS)} does not fit its config.json: {len(info[what])} "
                f"{what.replace('_', ' ')}, e.g. {first!r}; allowed: weights saved with the same UNet2DModel config"
            )
    return unet.to(device).eval()


@contextlib.contextmanager
def quiet_diffusers():
    """Silence diffusers' logger and Python warnings while loading: failures are raised as one line instead."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        dlog.set_verbosity(level)


class NoiseNet(torch.nn.Module):
    """``net(x, tau) -> eps_hat``: the call signature the families use, around a UNet2DModel."""

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self.unet(x, tau).sample


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pick_device() -> torch.device:
    """CUDA when torch sees a GPU, else CPU (Ray's logical GPUs do not count)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
