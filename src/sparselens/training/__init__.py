"""Training: one loop for every dictionary variant, with exact resume."""

from sparselens.training.config import CheckpointConfig, LogConfig, OptimConfig, TrainConfig
from sparselens.training.preparation import DataFactory
from sparselens.training.trainer import Trainer

__all__ = ["CheckpointConfig", "DataFactory", "LogConfig", "OptimConfig", "TrainConfig", "Trainer"]
