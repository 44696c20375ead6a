"""DDPM (Ho et al.): discrete VP chain, betas linear beta_min/T -> beta_max/T (1e-4 -> 0.02 at T=1000).

The continuous view (the probability-flow ODE of the likelihood attack) follows the trained ladder, not
the VP SDE it approximates: at time t the network's time input is tau = t (T - 1) and the marginal is
the ladder's own, log(alpha_bar) interpolated between integer steps by a cubic Hermite spline (exact at
every step, C1 in t, so the drift beta(t) = -d log(alpha_bar)/dt is continuous for the adaptive solver).
The ODE runs over the ladder, t in [0, 1] (steps 0..T-1). score_sde does the same for DDPM-trained
models (``models/utils.py``, ``get_score_fn``: the output is divided by the discrete std at the label
t (N - 1)); dividing by the continuous VP std instead was measured off by up to 0.16 bits/dim on an
analytic Gaussian (a factor 1.41 at step 1 and 10 at t = 1e-5, below the smallest trained noise level).
"""

import torch
from diffusers import DDPMScheduler

from ..errors import ConfigError
from .base import FAMILIES, VPFamily, _per_sample


@FAMILIES.register("ddpm")
class DDPM(VPFamily):
    discrete = True

    @classmethod
    def check(cls, cfg):
        """The last beta, beta_max / T, must be < 1: at 1 alpha_bar ends at 0 (-log alpha_bar = inf in the
        likelihood's drift), above 1 the ladder is NaN (the defaults, beta_max 20, with num_steps: 10 trained on
        NaN noise levels). T >= 3: the ladder's slope (``torch.gradient``, edge_order 2) needs 3 steps (T = 2
        raised RuntimeError building the family)."""
        if cfg.num_steps < 3:
            raise ConfigError(f"family.num_steps = {cfg.num_steps}: ddpm's ladder needs at least 3 steps; allowed: "
                              "an integer >= 3 for ddpm")
        if not cfg.beta_max < cfg.num_steps:
            raise ConfigError(
                f"family.beta_max = {cfg.beta_max:g} with family.num_steps = {cfg.num_steps}: ddpm's last beta "
                f"beta_max / num_steps = {cfg.beta_max / cfg.num_steps:g}; allowed: beta_max < num_steps"
            )
        super().check(cfg)

    def __init__(self, cfg):
        super().__init__(cfg)
        sched = DDPMScheduler(
            num_train_timesteps=self.T,
            beta_start=cfg.beta_min / self.T,
            beta_end=cfg.beta_max / self.T,
            beta_schedule="linear",
        )
        self.alphas_cumprod = sched.alphas_cumprod.double()
        # L(step) = -log(alpha_bar) at the integer steps and its slope (2nd-order differences, also at the ends)
        self._L = -self.alphas_cumprod.log()
        (self._dL,) = torch.gradient(self._L, edge_order=2)

    def step_mean_std(self, steps):
        a = self.alphas_cumprod.to(steps.device)[steps.long()]
        return a.sqrt(), (1 - a).sqrt()

    # --- continuous view: the ladder, interpolated ---------------------------------------------------
    def _neg_log_abar(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L(t) = -log(alpha_bar) at continuous t and dL/dt (float64, shape of t)."""
        tau = t.double() * (self.T - 1)
        k = tau.floor().clamp(0, self.T - 2)
        u = tau - k
        k = k.long()
        L, dL = self._L.to(t.device), self._dL.to(t.device)
        l0, l1, d0, d1 = L[k], L[k + 1], dL[k], dL[k + 1]
        u2, u3 = u * u, u * u * u
        value = (2 * u3 - 3 * u2 + 1) * l0 + (u3 - 2 * u2 + u) * d0 + (3 * u2 - 2 * u3) * l1 + (u3 - u2) * d1
        slope = (6 * u2 - 6 * u) * (l0 - l1) + (3 * u2 - 4 * u + 1) * d0 + (3 * u2 - 2 * u) * d1
        return value, slope * (self.T - 1)

    def mean_std(self, t):
        L, _ = self._neg_log_abar(t)
        return (-0.5 * L).exp(), (-torch.expm1(-L)).sqrt()

    def drift_diffusion2(self, x, t):
        _, beta = self._neg_log_abar(t)
        beta = _per_sample(beta, x)
        return -0.5 * beta * x, beta

    @property
    def t_range(self) -> tuple[float, float]:
        return (0.0, 1.0)  # step 0 (std 0.01) .. step T-1: where the ladder is trained
