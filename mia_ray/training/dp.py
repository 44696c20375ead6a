"""DP-SGD pieces around Opacus: option checks, the noise generator, the accountants.

* ``dp.accountant`` calibrates the noise multiplier: ``rdp`` (the paper's and Opacus' classic bound; the
  default, so ε stays comparable with published RDP figures) or ``prv`` (Opacus' PRV accountant, a
  numerically tight bound: at the quickstart's settings its ε is 6.7-9 % below RDP's (two runs), so the
  same guarantee needs less noise). Every run records ε under both (``epsilons``).
* ``dp.secure_mode`` uses Opacus' cryptographically secure RNG (torchcsprng) for the noise and the
  Poisson sampling, which a real DP claim needs (a seeded PRNG's noise can be reconstructed); off by
  default so research runs are reproducible.
* ``dp.grad_sample_mode`` picks how the per-sample gradients are computed (``grad_sample.MODES``).
"""

from __future__ import annotations

import importlib.util
import logging
import math

import torch

from ..errors import ConfigError
from .grad_sample import MODES as GRAD_SAMPLE_MODES

ACCOUNTANTS = ("rdp", "prv")
log = logging.getLogger("mia_ray")


def validate_dp(dp, key: str = "dp") -> None:
    """Reject DP options that cannot work (one line naming the key), before any compute."""
    if dp.accountant not in ACCOUNTANTS:
        raise ConfigError(f"{key}.accountant = {dp.accountant!r}; allowed: {', '.join(ACCOUNTANTS)}")
    if dp.grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise ConfigError(f"{key}.grad_sample_mode = {dp.grad_sample_mode!r}; allowed: {', '.join(GRAD_SAMPLE_MODES)}")
    if dp.secure_mode and importlib.util.find_spec("torchcsprng") is None:
        raise ConfigError(
            f"{key}.secure_mode = true needs Opacus' secure RNG package torchcsprng, which is not installed "
            "(install a build matching your torch, or set it false for reproducible research runs)"
        )


def schedule(train_size: int, batch_size: int, steps: int) -> tuple[int, int]:
    """(batches per epoch, epochs) of DP-SGD's noise calibration: sample rate 1 / batches (Opacus' Poisson loader
    over batches of min(batch_size, train_size)), whole epochs covering ``steps``."""
    batches = math.ceil(train_size / min(batch_size, train_size))
    return batches, max(1, math.ceil(steps / batches))


def check_budget(epsilon: float, delta: float, train_size: int, batch_size: int, steps: int,
                 accountant: str = "rdp", images: str | None = None) -> None:
    """Refuse an ε that DP-SGD with ``accountant`` cannot reach on this schedule, before anything is trained:
    Opacus' noise calibration gives up past its largest noise multiplier ("The privacy budget is too low", e.g.
    ε = 0.1 at δ = 1e-5 over 300 full-batch steps), which surfaced as a ValueError inside the training task.
    The schedule is ``schedule``'s, as in ``train._make_private``; ``images`` names the training-set count in
    the message (default ``train_size N``).

    RDP is tried first (milliseconds). PRV is tighter (at any noise multiplier its ε is at most RDP's), so an ε
    that RDP reaches PRV reaches too; only when RDP cannot is PRV's own calibration run, 0.3-10 s measured on
    this project's CPU (ε 1e-4 to 1 over 100-500 epochs; 7.8 s for full_paper.yaml's 500,000 steps on 1000
    images at ε = 0.05; on 64 images in full batches, 500,000 steps ran past 9 minutes), as training's own
    calibration would."""
    import warnings

    from opacus.accountants.utils import get_noise_multiplier

    batches, epochs = schedule(train_size, batch_size, steps)
    tried = ("rdp", "prv") if accountant == "prv" else ("rdp",)
    for name in tried:
        if name == "prv":  # minutes on small full-batch sets over many steps: say so before the wait
            log.warning("epsilon %g at delta %g over %d steps on %s: RDP cannot reach it; checking Opacus' PRV "
                        "calibration (seconds to minutes)", epsilon, delta, epochs * batches,
                        images or f"train_size {train_size}", extra={"now": True})  # not held by the door
        try:
            with warnings.catch_warnings():  # "Optimal order is the largest alpha": a warning line at the door
                warnings.simplefilter("ignore")
                get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1 / batches,
                                     epochs=epochs, accountant=name)
            return
        except ValueError as e:
            error = " ".join(str(e).split())
    other = ", or dp.accountant: prv" if accountant == "rdp" else ""
    raise ConfigError(
        f"epsilons has {epsilon:g}: DP-SGD with the {accountant.upper()} accountant cannot reach it at dp.delta = "
        f"{delta:g} over {epochs * batches} steps on {images or f'train_size {train_size}'} (Opacus: {error}); "
        f"allowed: a larger epsilon or dp.delta, or fewer train.steps{other}"
    )


def noise_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """The seeded DP noise generator on the training device: Opacus draws the noise on the parameters'
    device with it, and a CPU generator cannot draw CUDA tensors."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def epsilons(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> dict[str, float]:
    """ε at ``delta`` of ``steps`` Poisson-subsampled Gaussian steps, under each accountant (NaN, logged,
    where one fails: a secondary statistic must not lose a trained target). Measured cost of PRV at
    full_paper.yaml's settings (500k steps): 1-40 s; RDP: milliseconds."""
    from opacus.accountants import create_accountant

    out = {}
    for name in ACCOUNTANTS:
        if steps == 0:
            out[name] = 0.0
            continue
        acc = create_accountant(mechanism=name)
        acc.history = [(noise_multiplier, sample_rate, steps)]
        try:
            out[name] = float(acc.get_epsilon(delta=delta))
        except Exception as e:  # noqa: BLE001 - any numerical failure of one accountant
            log.warning("epsilon under the %s accountant failed (%s); recorded as NaN", name, e)
            out[name] = math.nan
    return out


def sample_rate_steps(history) -> tuple[float, float, int]:
    """(noise multiplier, sample rate, steps) of an Opacus accountant history of one mechanism."""
    if not history:
        return 0.0, 0.0, 0
    sigmas = {h[0] for h in history}
    rates = {h[1] for h in history}
    if len(sigmas) != 1 or len(rates) != 1:  # not produced by train_target: every step is the same mechanism
        raise ValueError(f"accountant history mixes mechanisms: {history}")
    return history[0][0], history[0][1], int(sum(h[2] for h in history))

