"""The door's check of a given checkpoint (``model.pretrained``): it exists, its safetensors weights load
into the UNet2DModel its config describes, and that model fits the data (sample size and channels)."""

from __future__ import annotations

import json
import math
import os

from .config import FamilyConfig
from .errors import ConfigError
from .models import WEIGHTS, load_unet
from .pretrained import KEY, is_pipeline, pipeline_family, unet_dir

ALLOWED = (
    "a diffusers UNet2DModel directory (config.json + diffusion_pytorch_model.safetensors) or a pipeline "
    "directory as DDPMPipeline.save_pretrained writes it (model_index.json, unet/, scheduler/)"
)


def _config(udir: str) -> dict:
    file = os.path.join(udir, "config.json")
    if not os.path.isfile(file):
        raise ConfigError(f"{KEY}: {udir} has no config.json; allowed: {ALLOWED}")
    try:
        with open(file) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{KEY}: cannot read {file} as JSON ({' '.join(str(e).split())})") from None
    cls = config.get("_class_name", "UNet2DModel") if isinstance(config, dict) else None
    if cls != "UNet2DModel":
        raise ConfigError(f"{KEY}: {file} describes {cls!r}; allowed: a UNet2DModel config")
    return config


def _check_safetensors(file: str) -> None:
    """Parse the header and check it covers the file exactly (truncated or garbage files fail here)."""
    from safetensors import safe_open

    if not os.path.isfile(file):
        raise ConfigError(f"{KEY}: {file} does not exist; only safetensors weights are loaded ({ALLOWED})")
    try:
        with safe_open(file, framework="pt") as f:
            f.keys()
    except Exception as e:  # SafetensorError and OSError
        raise ConfigError(
            f"{KEY}: {file} is not a complete safetensors file ({' '.join(str(e).split())}); "
            "allowed: weights written by save_pretrained(safe_serialization=True)"
        ) from None


def _fits(config: dict, udir: str, channels: int, resolution: int) -> None:
    size = config.get("sample_size")
    sizes = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if len(sizes) != 2 or sizes[0] != sizes[1] or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                      for v in sizes):  # [8, 16] or "8" at resolution 8 said "allowed:
        # data.resolution = 8"; 0 advised data.resolution = 0, which the door refuses
        raise ConfigError(f"{KEY}: {udir} has sample_size {size!r}; allowed: a positive integer (or a square [n, n]) "
                          "in its config.json")
    if sizes != (resolution, resolution):
        raise ConfigError(
            f"{KEY}: {udir} has sample_size {size} but data.resolution = {resolution}; allowed: "
            f"data.resolution = {sizes[0]} for this checkpoint"
        )
    for k in ("in_channels", "out_channels"):
        v = config.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:  # "1" said "in_channels = 1 but data.channels = 1"
            raise ConfigError(f"{KEY}: {udir} has {k} = {v!r}; allowed: a positive integer in its config.json")
        if v != channels:
            raise ConfigError(
                f"{KEY}: {udir} has {k} = {v} but data.channels = {channels}; allowed: "
                f"data.channels = {v} for this checkpoint"
            )
    for k in ("class_embed_type", "num_class_embeds"):  # the attacks call it without class labels: diffusers refused
        if config.get(k) is not None:  # each call ("class_labels should be provided"), in a trial, after Ray started
            raise ConfigError(
                f"{KEY}: {udir} has {k} = {config[k]!r} (a class-conditional UNet); allowed: {k} null (an "
                "unconditional UNet2DModel: the attacks give it no class labels)"
            )
    emb = config.get("time_embedding_type", "positional")
    if emb != "positional":
        raise ConfigError(
            f"{KEY}: {udir} has time_embedding_type {emb!r}; allowed: 'positional' (a noise-prediction UNet "
            "taking the step as time input)"
        )


def _check_size(config: dict, udir: str) -> None:
    """The config's UNet, counted on torch's meta device (nothing allocated), has at most the sweep's parameter cap
    and no more parameters than the weights hold: a config.json of [65536, 65536] channels beside small weights made
    the door build the UNet (68 GB asked of the allocator) before the strict load could refuse it."""
    from diffusers import UNet2DModel
    from safetensors import safe_open

    from .models import meta_count
    from .sweep_config import MAX_PARAMETERS

    file = os.path.join(udir, "config.json")
    try:
        n = meta_count(lambda: UNet2DModel.from_config(config))
    except Exception as e:  # diffusers raises ValueError, TypeError, ... for configs it cannot build
        raise ConfigError(f"{KEY}: cannot build the UNet2DModel of {file} ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}); allowed: a UNet2DModel config") from None
    if n > MAX_PARAMETERS:
        raise ConfigError(f"{KEY}: {file} describes a UNet2DModel of {n:.3g} parameters; allowed: at most "
                          f"{MAX_PARAMETERS:.0e}")
    with safe_open(os.path.join(udir, WEIGHTS), framework="pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    if n > stored:  # the strict load would refuse it too, after building
        raise ConfigError(f"{KEY}: {file} describes a UNet2DModel of {n:.3g} parameters but the weights hold "
                          f"{stored:.3g}; allowed: weights saved with the same UNet2DModel config")


def check_checkpoint(path: str, channels: int, resolution: int, family: str | None = None) -> FamilyConfig | None:
    """Refuse (one line) a checkpoint that will not load or does not fit the data; the pipeline's family.

    Returns the FamilyConfig from the scheduler config for a pipeline directory, None for a bare UNet.
    Loads the weights once (strictly), so a trial's load cannot fail on them later.
    """
    if not os.path.exists(path):
        raise ConfigError(f"{KEY}: {path} does not exist; allowed: {ALLOWED}")
    if not os.path.isdir(path):
        raise ConfigError(f"{KEY}: {path} is not a directory; allowed: {ALLOWED}")
    udir = unet_dir(path)
    fam = pipeline_family(path, family) if is_pipeline(path) else None
    config = _config(udir)
    _check_safetensors(os.path.join(udir, WEIGHTS))
    _fits(config, udir, channels, resolution)
    _check_size(config, udir)
    _check_finite(load_unet(udir, key=KEY), os.path.join(udir, WEIGHTS))
    return fam


def _check_finite(unet, file: str) -> None:
    """Every weight is finite: a NaN or inf weight made every score NaN (ranked silently by the metrics)."""
    import torch

    for name, tensor in unet.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"{KEY}: {file} holds NaN or inf in {name!r}; allowed: finite weights (a checkpoint "
                              "saved before training diverged)")


__all__ = ["ALLOWED", "check_checkpoint"]
