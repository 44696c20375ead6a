"""The target network: a diffusers UNet2DModel sized from config, or loaded from a directory."""

from __future__ import annotations

import os

import torch
from diffusers import UNet2DModel

from .config import ModelConfig
from .errors import ConfigError

WEIGHTS = "diffusion_pytorch_model.safetensors"


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
        attention_head_dim=8,
    )


def load_unet(path: str, device: str | torch.device = "cpu") -> UNet2DModel:
    """Load a UNet2DModel directory from safetensors only (never unpickles)."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(
            f"model.pretrained: {path!r} is not a diffusers UNet2DModel directory (no config.json)"
        )
    if not os.path.isfile(os.path.join(path, WEIGHTS)):
        raise ConfigError(
            f"model.pretrained: {path!r} has no {WEIGHTS} (only safetensors weights are loaded)"
        )
    unet = UNet2DModel.from_pretrained(path, use_safetensors=True, low_cpu_mem_usage=False)
    return unet.to(device).eval()


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
