"""A diffusion family = a forward SDE (VP or VE) + how the integer step axis maps onto it.

Every family's network predicts the noise: ``eps_hat = net(c_in(t) * x_t, tau(t))`` with the score
``s(x, t) = -eps_hat / sigma(t)``. With that parametrisation the paper's training losses
(DDPM ``||eps - eps_hat||^2``, NCSN ``sigma^2 ||s + z/sigma||^2``, score-SDE ``||sigma s + z||^2``)
are all ``mean ||z - eps_hat||^2``, so one loss serves every family and the loss attack.

The integer ``step`` axis (0 = least noise, T-1 = most) is shared by all families: discrete families
use their own noise ladder at index ``step``; continuous ones use ``t = max(step / T, eps)``.
The network's time input is ``tau = t (T - 1)`` (``= step`` for discrete families).
"""

from __future__ import annotations

import math

import torch

from ..config import FamilyConfig
from ..errors import ConfigError
from ..registry import Registry

FAMILIES: Registry[type[Family]] = Registry("family")


class Family:
    """Schedule of one family. Subclasses set ``discrete`` and the SDE (VP or VE) methods."""

    discrete: bool = False

    def __init__(self, cfg: FamilyConfig):
        self.cfg = cfg
        self.T = cfg.num_steps
        self.eps = cfg.eps

    schedule_keys: tuple[str, ...] = ()  # the family: keys its schedule is built from (named by check's errors)

    @classmethod
    def check(cls, cfg: FamilyConfig) -> None:
        """The sweep's door: refuse (``ConfigError``) a ``family:`` this family cannot build a usable schedule
        from, beyond the checks every family shares (``sweep_config._check_family``). Builds the schedule (T <=
        100000 values: milliseconds) and wants, in float32 as the network sees it, a positive finite noise std at
        every step and a finite ODE drift and diffusion at both ends of ``t_range``: ``sigma_max: 1e200`` raised
        OverflowError in training, ``1e150`` an infinite diffusion, ``sigma_min: 1e-300`` a std of 0 (the score
        divides by it)."""
        named = cls.schedule_keys + (() if cls.discrete else ("eps",))  # continuous steps are clamped at eps
        keys = ", ".join(f"family.{k} = {getattr(cfg, k):g}" for k in named)
        keys = f"{keys} with family.num_steps = {cfg.num_steps}" if keys else f"family.num_steps = {cfg.num_steps}"
        allowed = "allowed: values whose noise levels are positive and finite in float32 (the defaults: " + ", ".join(
            f"{k} = {getattr(FamilyConfig(), k):g}" for k in named) + ")"
        try:
            fam = cls(cfg)
            mean, std = (v.float() for v in fam.step_mean_std(torch.arange(cfg.num_steps)))
            ends = [fam.drift_diffusion2(torch.ones(1, 1), torch.tensor(t, dtype=torch.float64)) for t in fam.t_range]
        except ArithmeticError as e:  # OverflowError of (sigma_max / sigma_min) ** t
            raise ConfigError(f"{keys}: the {cfg.name} schedule overflows ({e}); {allowed}") from None
        bad = ~(torch.isfinite(mean) & torch.isfinite(std) & (std > 0))
        if bad.any():
            k = int(bad.nonzero()[0])
            shown = f"{float(std[k]):g}"
            raise ConfigError(f"{keys}: the {cfg.name} noise std at step {k} is {shown} in float32; {allowed}")
        if not all(bool(torch.isfinite(v.float()).all()) for pair in ends for v in pair):
            raise ConfigError(f"{keys}: the {cfg.name} ODE's diffusion is not finite in float32 at t = "
                              f"{fam.t_range}; {allowed}")

    # --- continuous-time view (used by training of continuous families and by the PF-ODE) ---------
    def mean_std(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal p_t(x_t | x_0) = N(mean * x_0, std^2 I) at continuous time t."""
        raise NotImplementedError

    def drift_diffusion2(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SDE coefficients: f(x, t) and g(t)^2 (broadcast over the batch)."""
        raise NotImplementedError

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the prior at t = 1, per sample."""
        raise NotImplementedError

    def c_in(self, std: torch.Tensor) -> torch.Tensor:
        """Input scaling of the network (1 for VP)."""
        return torch.ones_like(std)

    def tau(self, t: torch.Tensor) -> torch.Tensor:
        """The network's time input for continuous time t."""
        return t * (self.T - 1)

    @property
    def t_range(self) -> tuple[float, float]:
        return (self.eps, 1.0)

    # --- the integer step axis ---------------------------------------------------------------------
    def step_time(self, steps: torch.Tensor) -> torch.Tensor:
        """Continuous time of integer steps."""
        if self.discrete:
            return steps.double() / (self.T - 1)
        return (steps.double() / self.T).clamp(min=self.eps)

    def step_mean_std(self, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal mean coefficient and std at integer steps."""
        return self.mean_std(self.step_time(steps))

    def sample_train(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Steps for n training draws: integers for discrete families, fractional (t T) otherwise."""
        if self.discrete:
            steps = torch.randint(0, self.T, (n,), generator=generator)
            return steps
        t = torch.rand(n, generator=generator, dtype=torch.float64) * (1 - self.eps) + self.eps
        return t * self.T  # fractional step: step_time() maps it back to t

    # --- what the network sees ---------------------------------------------------------------------
    def model_inputs(self, x0: torch.Tensor, steps: torch.Tensor, noise: torch.Tensor):
        """Perturb x0 at (possibly fractional) steps: returns (x_t, scaled input, tau, std)."""
        t = self.step_time(steps)
        mean, std = self.step_mean_std(steps)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        mean_b = mean.to(x0.dtype).view(shape)
        std_b = std.to(x0.dtype).view(shape)
        xt = mean_b * x0 + std_b * noise
        return xt, self.c_in(std_b) * xt, self.tau(t).to(x0.dtype), std

    def perturb(self, x0: torch.Tensor, steps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = mean(step) x_0 + std(step) noise."""
        return self.model_inputs(x0, steps, noise)[0]

    def loss(self, net, x0: torch.Tensor, steps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-sample training loss mean ||noise - eps_hat||^2 at the given steps."""
        _, xin, tau, _ = self.model_inputs(x0, steps, noise)
        eps_hat = net(xin, tau)
        return (eps_hat.float() - noise.float()).pow(2).flatten(1).mean(1)

    def score(self, net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Model score s(x, t) = -eps_hat / std(t); ``t`` is one time (0-d) or one per sample [B]."""
        tb = t.reshape(-1).expand(x.shape[0]).double()
        _, std = self.mean_std(tb)
        shape = (-1,) + (1,) * (x.dim() - 1)
        std_b = std.to(x.dtype).view(shape)
        eps_hat = net(self.c_in(std_b) * x, self.tau(tb).to(x.dtype))
        return -eps_hat.to(x.dtype) / std_b

    def ode_drift(self, net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability-flow ODE drift f(x, t) - g(t)^2 s(x, t) / 2 (``t``: 0-d or [B])."""
        f, g2 = self.drift_diffusion2(x, t)
        return f - 0.5 * g2 * self.score(net, x, t)


class VPFamily(Family):
    """Variance preserving: beta(t) = beta_min + t (beta_max - beta_min), prior N(0, I)."""

    schedule_keys = ("beta_min", "beta_max")

    def _log_mean(self, t: torch.Tensor) -> torch.Tensor:
        b0, b1 = self.cfg.beta_min, self.cfg.beta_max
        return -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0

    def mean_std(self, t):
        lm = self._log_mean(t.double())
        return lm.exp(), (-torch.expm1(2 * lm)).sqrt()

    def drift_diffusion2(self, x, t):
        tb = _per_sample(t, x)
        beta = self.cfg.beta_min + tb * (self.cfg.beta_max - self.cfg.beta_min)
        return -0.5 * beta * x, beta

    def prior_logp(self, z):
        d = z[0].numel()
        return -0.5 * d * math.log(2 * math.pi) - 0.5 * z.flatten(1).pow(2).sum(1)


class VEFamily(Family):
    """Variance exploding: sigma(t) = sigma_min (sigma_max / sigma_min)^t, prior N(0, sigma_max^2 I).

    The network input is scaled by 1 / sqrt(1 + sigma^2) so that it stays O(1) at every noise level
    (without it a small UNet sees inputs of norm ~sigma_max and trains poorly).
    """

    schedule_keys = ("sigma_min", "sigma_max")

    def _sigma(self, t):
        s0, s1 = self.cfg.sigma_min, self.cfg.sigma_max
        return s0 * (s1 / s0) ** t

    def mean_std(self, t):
        t = t.double()
        return torch.ones_like(t), self._sigma(t)

    def c_in(self, std):
        return (1 + std**2).rsqrt()

    def drift_diffusion2(self, x, t):
        s = self._sigma(_per_sample(t, x).double())
        g2 = s**2 * 2 * math.log(self.cfg.sigma_max / self.cfg.sigma_min)
        return torch.zeros_like(x), g2.to(x.dtype)

    def prior_logp(self, z):
        d = z[0].numel()
        s = self.cfg.sigma_max
        return -0.5 * d * math.log(2 * math.pi * s**2) - 0.5 * z.flatten(1).pow(2).sum(1) / s**2


def _per_sample(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 0-d or [B] time as a tensor broadcasting against x [B, ...]."""
    return t.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
