"""SimA (mx-ethan-rao/SimA ``DDPM/components.py``, class ``SimA``): the clean image fed at step t.

Statistic at each step t: sum |eps_hat(x0, t)|^p over all pixels (p = 4), one value per step; a member's
noise prediction on its own clean image is small. Lower = member; score = -statistic.
Authors' defaults (``scripts.sh`` for DDPM): ``--interval 20 --attack_num 30`` = steps 0, 20, ..., 600.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import ATTACKS, Attack, AttackOutput, Cost
from .pia import check_lp
from .queries import eps_rows, flat_work, lp_sum


@dataclass
class SimAParams:
    steps: list[int] = field(default_factory=lambda: list(range(0, 601, 20)))  # one score row per step
    p: float = 4.0
    max_batch: int = 1024


@ATTACKS.register("sima")
class SimAAttack(Attack):
    Params = SimAParams

    def steps(self, params, num_steps=None):
        return list(params.steps)

    def check(self, params, num_steps, key):
        check_lp(params, key)

    def cost(self, params, num_steps):
        return Cost(forward=len(params.steps))

    @torch.inference_mode()  # 1.03-1.08x no_grad's speed, bitwise equal (docs/bench_speed.md section 10)
    def run(self, adapter, images, sample_ids, params):
        x0 = images.to(adapter.device)
        si, st = flat_work(len(x0), params.steps, x0.device)
        eps = eps_rows(adapter, lambda sl: x0[si[sl]], st, params.max_batch)
        stat = lp_sum(eps, params.p).view(len(x0), len(params.steps)).T.cpu().numpy()
        return AttackOutput(self.steps(params), -stat, stat)
