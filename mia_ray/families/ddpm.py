"""DDPM (Ho et al.): discrete VP chain, betas linear beta_min/T -> beta_max/T (1e-4 -> 0.02 at T=1000)."""

from diffusers import DDPMScheduler

from .base import FAMILIES, VPFamily


@FAMILIES.register("ddpm")
class DDPM(VPFamily):
    discrete = True

    def __init__(self, cfg):
        super().__init__(cfg)
        sched = DDPMScheduler(
            num_train_timesteps=self.T,
            beta_start=cfg.beta_min / self.T,
            beta_end=cfg.beta_max / self.T,
            beta_schedule="linear",
        )
        self.alphas_cumprod = sched.alphas_cumprod.double()

    def step_mean_std(self, steps):
        a = self.alphas_cumprod.to(steps.device)[steps.long()]
        return a.sqrt(), (1 - a).sqrt()
