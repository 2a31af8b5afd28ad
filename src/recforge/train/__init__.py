"""The one training loop for torch models: ``TrainConfig`` + ``Trainer``."""

from recforge.train.config import TrainConfig
from recforge.train.trainer import History, Trainer, seed_everything

__all__ = ["History", "TrainConfig", "Trainer", "seed_everything"]
