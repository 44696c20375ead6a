"""LiRA (Carlini et al. 2022, "Membership Inference Attacks From First Principles") over the diffusion loss.

Per model, ``run`` computes the statistic: the loss at each step, averaged over ``draws`` keyed noise draws (the
loss attack's computation and keys, so the noise of (sample, step, draw) is the same for the target and every
reference model). Its uncalibrated score is -loss. After the target and its reference models are scored,
:func:`calibrate` (pure) turns the statistics into LiRA scores, per step, on phi = log(loss):

* online:  score = log N(phi; mu_in, sd_in^2) - log N(phi; mu_out, sd_out^2), the Gaussians fitted per sample
  to the references that trained on it (IN) and did not (OUT);
* offline: score = -log P[Z <= phi], Z ~ N(mu_out, sd_out^2): minus the log p-value of a one-sided test
  against OUT only (members have LOWER loss, so a small OUT probability of a loss this low is evidence);
* global_variance: one sd per step (IN and OUT separately), pooled over samples from the deviations from each
  sample's own mean: var = sum of squared deviations / sum_i (n_i - 1) (for few references; the role of
  Carlini et al.'s ``fix_variance``, whose code takes the std of all values around one global mean).

The statistic is log(loss), our choice: Carlini et al. 2022 logit-scale a classifier's confidence so that it
is close to Gaussian across models; a diffusion loss is positive and right-skewed, and its log plays that role
(Carlini et al. 2023 ran LiRA on the diffusion loss itself; the log is monotone, so one model's ranking is
unchanged). Higher score = more member-like, as for every attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_ndtr

from ..errors import ConfigError
from .base import ATTACKS, Attack, AttackOutput, Cost
from .loss import LossAttack, LossParams

# Each reference is a whole model trained with the target's recipe: 100000 passed the door and would have trained
# 100000 models per target. Carlini et al. (2022) trained at most 256 shadow models, their gains levelling off well
# before; 1024 is 4x that.
MAX_REFERENCES = 1024
_SD_FLOOR = 1e-6  # sd of log-loss below this is a degenerate fit (identical references): floor it


@dataclass
class LiraParams:
    references: int = 8  # R reference models per target (an even number: complementary halves)
    steps: list[int] = field(default_factory=lambda: [50, 100, 200, 300])
    draws: int = 1  # K keyed noise draws averaged per (sample, step), shared by target and references
    online: bool = True  # IN and OUT Gaussians; false = offline (OUT only)
    global_variance: bool = False  # one sd per step pooled over samples (for few references)
    seed: int = 0  # noise of (sample, step, draw) is a function of (seed, sample_id, step, draw)
    max_batch: int = 1024  # model forward batch


def loss_params(p: LiraParams) -> LossParams:
    return LossParams(steps=list(p.steps), draws=p.draws, seed=p.seed, max_batch=p.max_batch)


@ATTACKS.register("lira")
class LiraAttack(Attack):
    """Needs reference models: ``mia_ray.trial`` scores them and calls :func:`calibrate`."""

    Params = LiraParams
    needs_references = True

    def steps(self, params, num_steps=None):
        return list(params.steps)

    def cost(self, params, num_steps):
        """Per sample and model; a trial scores 1 + ``references`` models."""
        return Cost(forward=len(params.steps) * params.draws)

    def check(self, params, num_steps, key):
        if params.references < 2 or params.references % 2 or params.references > MAX_REFERENCES:
            raise ConfigError(f"{key}.references = {params.references}; allowed: an even integer in [2, "
                              f"{MAX_REFERENCES}]")
        if params.online and not params.global_variance and params.references < 4:
            raise ConfigError(
                f"{key}.references = {params.references}: per-sample variances need >= 4 references; "
                "allowed: more references, or global_variance: true"
            )
        LossAttack().check(loss_params(params), num_steps, key)

    def run(self, adapter, images, sample_ids, params):
        out = LossAttack().run(adapter, images, sample_ids, loss_params(params))
        return AttackOutput(out.steps, out.score, out.statistic)


def _fit(phi: np.ndarray, mask: np.ndarray, global_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per (step, sample): mean and sd of ``phi`` [R, S, N] over the references where ``mask`` [R, N]."""
    w = mask[:, None, :].astype(np.float64)
    n = w.sum(0)
    if (n < 1).any():
        raise ValueError("a sample has no reference on one side (IN/OUT): use an even number of references")
    mu = (w * phi).sum(0) / n
    sq = (w * (phi - mu) ** 2).sum(0)
    if global_variance:  # pooled within-sample variance, one per step
        sd = np.sqrt(sq.sum(1, keepdims=True) / np.maximum(n.sum(1, keepdims=True) - n.shape[1], 1))
        sd = np.broadcast_to(sd, mu.shape)
    else:
        sd = np.sqrt(sq / n)
    return mu, np.maximum(sd, _SD_FLOOR)


def _logpdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def calibrate(target_stat, ref_stat, ref_in, params: LiraParams) -> np.ndarray:
    """LiRA scores [S, N] from the target's loss [S, N], the references' [R, S, N] and ``ref_in`` [R, N]
    (True where reference r trained on sample n). Pure."""
    phi = np.log(np.asarray(target_stat, np.float64))
    ref = np.log(np.asarray(ref_stat, np.float64))
    inc = np.asarray(ref_in, bool)
    if ref.shape[0] != inc.shape[0] or ref.shape[1:] != phi.shape or inc.shape[1] != phi.shape[1]:
        raise ValueError(f"shapes: target {phi.shape}, references {ref.shape}, inclusion {inc.shape}")
    mu_out, sd_out = _fit(ref, ~inc, params.global_variance)
    if not params.online:
        return -log_ndtr((phi - mu_out) / sd_out)
    mu_in, sd_in = _fit(ref, inc, params.global_variance)
    return _logpdf(phi, mu_in, sd_in) - _logpdf(phi, mu_out, sd_out)
