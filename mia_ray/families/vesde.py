"""VE SDE (Song et al. 2021): continuous time t in [eps, 1], sigma_min -> sigma_max geometric."""

from .base import FAMILIES, VEFamily


@FAMILIES.register("vesde")
class VESDE(VEFamily):
    discrete = False
