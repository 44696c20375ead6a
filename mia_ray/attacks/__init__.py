"""Membership-inference attacks, registered by name (``ATTACKS``), and the one-pass scorer."""

from . import likelihood, loss  # noqa: F401  (registration)
from .adapter import DiffusionAdapter
from .base import ATTACKS, Attack, AttackOutput, ModelAdapter
from .scoring import AttackSpec, score_batch

__all__ = [
    "ATTACKS", "Attack", "AttackOutput", "AttackSpec", "DiffusionAdapter", "ModelAdapter", "score_batch",
]
