"""Training of targets (plain and DP-SGD), the content-addressed target store, and ``get_or_train``."""

from .build import get_or_train, member_images
from .store import Target, TargetStore
from .train import TrainResult, train_target

__all__ = ["Target", "TargetStore", "TrainResult", "get_or_train", "member_images", "train_target"]
