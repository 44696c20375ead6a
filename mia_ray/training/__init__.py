"""Training of targets (plain and DP-SGD) and the content-addressed target store."""

from .store import Target, TargetStore
from .train import TrainResult, train_target

__all__ = ["Target", "TargetStore", "TrainResult", "train_target"]
