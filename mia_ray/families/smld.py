"""SMLD / NCSN (Song & Ermon): discrete VE ladder, sigma geometric sigma_min -> sigma_max over T steps."""

import torch
from diffusers import ScoreSdeVeScheduler

from .base import FAMILIES, VEFamily


@FAMILIES.register("smld")
class SMLD(VEFamily):
    discrete = True

    def __init__(self, cfg):
        super().__init__(cfg)
        sched = ScoreSdeVeScheduler(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
        sched.set_sigmas(self.T)
        self.sigmas = sched.discrete_sigmas.double()  # geometric ladder, index 0 = sigma_min

    def step_mean_std(self, steps):
        s = self.sigmas.to(steps.device)[steps.long()]
        return torch.ones_like(s), s
