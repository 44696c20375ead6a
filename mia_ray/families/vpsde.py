"""VP SDE (Song et al. 2021): continuous time t in [eps, 1], beta_min 0.1 -> beta_max 20."""

from .base import FAMILIES, VPFamily


@FAMILIES.register("vpsde")
class VPSDE(VPFamily):
    discrete = False
