"""SecMI, statistical variant (Duan et al., ICML 2023; jinhaoduan/SecMI ``mia_evals/secmia.py``).

x~ = deterministic (DDIM) inversion of the clean x0 from step 0 (x0 itself taken as the step-0 state)
through steps k, 2k, ..., t_sec - k (``get_intermediate_results``: ``target_steps = range(0, t_sec, k)[1:]``);
x~' = one deterministic step from t_sec - k to t_sec and one back to t_sec - k. Statistic:
||x~ - x~'||^2 summed over all pixels (``naive_statistic_attack``, l2); one value, reported at step t_sec.
Lower = member; score = -statistic. Authors' defaults: t_sec = 100, k = 10 (t_sec / k + 1 = 11 forwards).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .base import ATTACKS, Attack, AttackOutput, Cost
from .queries import eps_at, lp_sum


@dataclass
class SecMIParams:
    t_sec: int = 100  # the step the statistic is taken at (reported as its step)
    k: int = 10  # the inversion's step interval
    max_batch: int = 1024


@ATTACKS.register("secmi")
class SecMIAttack(Attack):
    Params = SecMIParams

    def steps(self, params, num_steps=None):
        return [params.t_sec]

    def check(self, params, num_steps, key):
        if params.k < 1:
            raise ConfigError(f"{key}.k = {params.k}; allowed: an integer >= 1")
        if params.t_sec < 2 * params.k or params.t_sec % params.k:
            raise ConfigError(
                f"{key}.t_sec = {params.t_sec} with {key}.k = {params.k}; allowed: t_sec a multiple of k, "
                f"at least 2k (authors: t_sec = 100, k = 10)"
            )
        if params.max_batch < 1:
            raise ConfigError(f"{key}.max_batch = {params.max_batch}; allowed: an integer >= 1")

    def cost(self, params, num_steps):
        return Cost(forward=params.t_sec // params.k + 1)

    @torch.no_grad()
    def run(self, adapter, images, sample_ids, params):
        t, k, mb = params.t_sec, params.k, params.max_batch
        x = images.to(adapter.device)
        for u in range(0, t - k, k):  # 0 -> k -> ... -> t - k
            x = adapter.ddim_step(x, u, u + k, eps_at(adapter, x, u, mb))
        up = adapter.ddim_step(x, t - k, t, eps_at(adapter, x, t - k, mb))
        back = adapter.ddim_step(up, t, t - k, eps_at(adapter, up, t, mb))
        stat = lp_sum(x - back, 2).cpu().numpy()[None, :]
        return AttackOutput([t], -stat, stat)
