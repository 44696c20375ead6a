"""Diffusion families, registered by name: ddpm, smld, vpsde, vesde."""

from . import ddpm, smld, vesde, vpsde  # noqa: F401  (registration)
from .base import FAMILIES, Family, VEFamily, VPFamily


def make_family(cfg) -> Family:
    """The family named by ``cfg.name`` (a FamilyConfig)."""
    return FAMILIES.get(cfg.name, key="family")(cfg)


__all__ = ["FAMILIES", "Family", "VPFamily", "VEFamily", "make_family"]
