"""Membership-inference attacks, registered by name (``ATTACKS``), and the one-pass scorer."""

from . import likelihood, lira, loss, pia, secmi, sima  # noqa: F401  (registration)
from .adapter import DiffusionAdapter
from .base import ATTACKS, Attack, AttackOutput, Cost, ModelAdapter, StepMixin
from .costs import likelihood_cost
from .scoring import AttackSpec, score_batch

if "cost" not in vars(likelihood.LikelihoodAttack):  # moves into likelihood.py when that file lands
    likelihood.LikelihoodAttack.cost = likelihood_cost

__all__ = [
    "ATTACKS", "Attack", "AttackOutput", "AttackSpec", "Cost", "DiffusionAdapter", "ModelAdapter", "StepMixin",
    "score_batch",
]
