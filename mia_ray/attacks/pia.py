"""PIA and PIAN (Kong et al., ICLR 2024, "proximal initialization"; kong13661/PIA ``DDPM/components.py``).

eps0 = eps_hat(x0, 0) (the clean image fed at step 0); for each step t: x_t = a_t x0 + s_t eps0 and the
statistic is sum |eps_hat(x_t, t) - eps0|^p over all pixels (p = 4), one value per step, as the authors
report an AUC per t. PIAN first normalises eps0 per sample to mean |eps0| = sqrt(2 / pi) (the mean
absolute value of a standard normal). Lower = member; score = -statistic.
Authors' defaults: ``--interval 10 --attack_num 30`` = steps 10, 20, ..., 300; ``lp = 4``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .base import ATTACKS, Attack, AttackOutput, Cost
from .queries import eps_at, eps_rows, flat_work, lp_sum


@dataclass
class PIAParams:
    steps: list[int] = field(default_factory=lambda: list(range(10, 301, 10)))  # one score row per step
    p: float = 4.0  # the norm's exponent (authors' lp)
    max_batch: int = 1024  # model forward batch (samples x steps are flattened into it)


# The statistic sums |d|^p in float64 over every pixel. At p = 1e300 it overflowed, and at p = 1e-300 every |d|^p was
# exactly 1: either way each sample scored the same and the attack finished at AUC 0.5 instead of refusing. The
# authors use p = 4 (PIA and SimA); from 0.01 to 64 the sums stay finite and informative for |d| between 1e-3 and 10.
MIN_P, MAX_P = 0.01, 64.0


def check_lp(params, key: str, name: str = "steps") -> None:
    """Shared checks of the step-set, p-norm attacks (PIA, PIAN, SimA)."""
    if not getattr(params, name):
        raise ConfigError(f"{key}.{name} is empty; allowed: a list of integer steps")
    if not math.isinf(params.p) and not MIN_P <= params.p <= MAX_P:  # inf: check_numbers ("finite numbers")
        raise ConfigError(f"{key}.p = {params.p}; allowed: a number in [{MIN_P:g}, {MAX_P:g}]")
    if params.max_batch < 1:
        raise ConfigError(f"{key}.max_batch = {params.max_batch}; allowed: an integer >= 1")


@ATTACKS.register("pia")
class PIAAttack(Attack):
    Params = PIAParams
    normalize = False

    def steps(self, params, num_steps=None):
        return list(params.steps)

    def check(self, params, num_steps, key):
        check_lp(params, key)

    def cost(self, params, num_steps):
        return Cost(forward=1 + len(params.steps))

    @torch.inference_mode()  # 1.03-1.08x no_grad's speed, bitwise equal (docs/bench_speed.md section 10)
    def run(self, adapter, images, sample_ids, params):
        x0 = images.to(adapter.device)
        eps0 = eps_at(adapter, x0, 0, params.max_batch)
        if self.normalize:  # authors: eps / eps.abs().mean(non-batch dims) * (2 / pi) ** 0.5
            eps0 = eps0 / eps0.abs().mean(tuple(range(1, eps0.dim())), keepdim=True) * math.sqrt(2 / math.pi)
        si, st = flat_work(len(x0), params.steps, x0.device)
        shape = (-1,) + (1,) * (x0.dim() - 1)

        def rows(sl):
            a, s = adapter.step_coefs(st[sl])
            i = si[sl]
            return (a.view(shape) * x0[i].double() + s.view(shape) * eps0[i].double()).to(x0.dtype)

        eps_back = eps_rows(adapter, rows, st, params.max_batch)
        stat = lp_sum(eps_back - eps0[si], params.p).view(len(x0), len(params.steps)).T.cpu().numpy()
        return AttackOutput(self.steps(params), -stat, stat)


@ATTACKS.register("pian")
class PIANAttack(PIAAttack):
    normalize = True
