"""A given diffusers pipeline directory as a target: its UNet, and its family from the scheduler config.

``DDPMPipeline.save_pretrained(path)`` writes ``model_index.json``, ``unet/`` (config.json + safetensors)
and ``scheduler/scheduler_config.json``. The scheduler's class and betas / sigmas say which family's
schedule the network was trained with; a schedule mia_ray cannot reproduce exactly is refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable

from .config import FamilyConfig
from .errors import ConfigError
from .registry import Registry

KEY = "model.pretrained"
SCHEDULER_CONFIG = os.path.join("scheduler", "scheduler_config.json")

# scheduler class name -> (scheduler config, family name or None) -> FamilyConfig
SCHEDULERS: Registry[Callable[[dict, str | None], FamilyConfig]] = Registry("scheduler")


def is_pipeline(path: str) -> bool:
    """True for a pipeline directory (``model_index.json``), False for a bare UNet2DModel directory."""
    return os.path.isfile(os.path.join(path, "model_index.json"))


def unet_dir(path: str) -> str:
    """The UNet2DModel directory of ``path``: ``path/unet`` for a pipeline, ``path`` itself otherwise."""
    return os.path.join(path, "unet") if is_pipeline(path) else path


def read_scheduler_config(path: str) -> dict:
    """The scheduler config of a pipeline directory (one-line ConfigError when absent or not JSON)."""
    file = os.path.join(path, SCHEDULER_CONFIG)
    try:
        with open(file) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{KEY}: {path!r} has no {SCHEDULER_CONFIG}; allowed: a pipeline directory as "
            "DDPMPipeline.save_pretrained writes it (model_index.json, unet/, scheduler/)"
        ) from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{KEY}: cannot read {file} as JSON ({' '.join(str(e).split())})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{KEY}: {file} is not a JSON object")
    return config


def family_from_scheduler(config: dict, name: str | None = None) -> FamilyConfig:
    """The FamilyConfig whose schedule equals the scheduler's (``name`` picks among compatible families)."""
    cls = config.get("_class_name")
    if cls not in SCHEDULERS:
        raise ConfigError(
            f"{KEY}: scheduler {cls!r} is not supported; allowed: {', '.join(SCHEDULERS.names())} "
            "(linear betas, epsilon prediction)"
        )
    return SCHEDULERS.get(cls)(config, name)


def _number(config: dict, cls: str, key: str, default, integer: bool = False):
    """``config[key]`` (or ``default``) as a finite float, or an int: one line naming the scheduler key otherwise
    (``int("abc")``, ``float(None)`` or ``float([1])`` raised a traceback; 999.7 steps were read as 999)."""
    v = config.get(key, default)
    try:
        x = float(v)
        ok = not isinstance(v, bool) and math.isfinite(x) and (not integer or x.is_integer())
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(f"{KEY}: {cls} {key} = {v!r}; allowed: {'an integer' if integer else 'a finite number'}")
    return int(x) if integer else x


def _pick(cls: str, name: str | None, allowed: tuple[str, ...]) -> str:
    if name is None:
        return allowed[0]
    if name not in allowed:
        raise ConfigError(f"families = [{name!r}] does not match the checkpoint's {cls}; allowed: {', '.join(allowed)}")
    return name


def _vp_betas(config: dict, name: str | None) -> FamilyConfig:
    """DDPM/DDIM with linear betas beta_start -> beta_end over T steps = ddpm(beta_min = T beta_start, ...)."""
    cls = config["_class_name"]
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None or schedule != "linear":
        what = "explicit trained_betas" if config.get("trained_betas") is not None else f"{schedule!r} betas"
        raise ConfigError(f"{KEY}: {cls} with {what} is not supported; allowed: beta_schedule 'linear'")
    prediction = config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ConfigError(
            f"{KEY}: {cls} prediction_type {prediction!r} is not supported; allowed: 'epsilon' (noise prediction)"
        )
    t = _number(config, cls, "num_train_timesteps", 1000, integer=True)
    b0, b1 = _number(config, cls, "beta_start", 1e-4), _number(config, cls, "beta_end", 0.02)
    if t < 2 or not 0 < b0 < b1 < 1:
        raise ConfigError(
            f"{KEY}: {cls} num_train_timesteps={t}, beta_start={b0}, beta_end={b1}; "
            "allowed: T >= 2 and 0 < beta_start < beta_end < 1"
        )
    return FamilyConfig(name=_pick(cls, name, ("ddpm",)), num_steps=t, beta_min=b0 * t, beta_max=b1 * t)


def _ve_sigmas(config: dict, name: str | None) -> FamilyConfig:
    """ScoreSdeVeScheduler: geometric sigma_min -> sigma_max; vesde (continuous, eps = sampling_eps) or smld."""
    cls = "ScoreSdeVeScheduler"
    s0, s1 = _number(config, cls, "sigma_min", 0.01), _number(config, cls, "sigma_max", 1348.0)
    t = _number(config, cls, "num_train_timesteps", 2000, integer=True)
    eps = _number(config, cls, "sampling_eps", 1e-5)
    if t < 2 or not 0 < s0 < s1 or not 0 < eps < 1:
        raise ConfigError(
            f"{KEY}: ScoreSdeVeScheduler sigma_min={s0}, sigma_max={s1}, num_train_timesteps={t}; "
            "allowed: 0 < sigma_min < sigma_max and T >= 2"
        )
    return FamilyConfig(
        name=_pick("ScoreSdeVeScheduler", name, ("vesde", "smld")), num_steps=t, sigma_min=s0, sigma_max=s1, eps=eps
    )


SCHEDULERS.register("DDPMScheduler")(_vp_betas)
SCHEDULERS.register("DDIMScheduler")(_vp_betas)
SCHEDULERS.register("ScoreSdeVeScheduler")(_ve_sigmas)


def pipeline_family(path: str, name: str | None = None) -> FamilyConfig:
    """The family of a pipeline directory, from its scheduler config."""
    return family_from_scheduler(read_scheduler_config(path), name)


def load_pipeline_unet(path: str, device="cpu"):
    """The UNet2DModel of a pipeline directory (or of a bare UNet directory), strictly from safetensors."""
    from .models import load_unet

    if not os.path.isdir(path):
        raise ConfigError(f"{KEY}: {path!r} does not exist or is not a directory")
    return load_unet(unet_dir(path), device, key=KEY)


__all__ = [
    "SCHEDULERS", "family_from_scheduler", "is_pipeline", "load_pipeline_unet", "pipeline_family",
    "read_scheduler_config", "unet_dir",
]
