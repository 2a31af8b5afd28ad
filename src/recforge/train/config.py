"""``TrainConfig``: everything the one ``Trainer`` needs to know, typed and checked.

Build it from a mapping with ``recforge.config.from_dict(TrainConfig, {...})``: unknown keys
are an error that names the closest valid key.
"""

from __future__ import annotations

from dataclasses import dataclass

from recforge.exceptions import ConfigError

OPTIMIZERS = ("sgd", "adagrad", "adam", "adamw")
SCHEDULES = ("constant", "warmup_linear", "warmup_cosine", "step", "exponential", "cyclic")
MODES = ("max", "min")


@dataclass
class TrainConfig:
    """Training hyperparameters shared by every torch model."""

    epochs: int = 5  # full passes over the training batches
    batch_size: int = 1024  # rows per step (used by whoever builds the batches)
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # "sgd" | "adagrad" | "adam" | "adamw"
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0  # coupled L2 for sgd/adagrad/adam, decoupled for adamw
    l2: float = 0.0  # penalty on the embedding rows a batch used, added to the loss
    schedule: str = "constant"  # learning-rate schedule, see Trainer._lr_factor
    warmup_steps: int = 0  # linear warm-up steps (any schedule)
    step_size: int = 1  # "step": decay every step_size epochs; "cyclic": half-cycle in epochs
    gamma: float = 0.5  # decay factor ("step", "exponential"); lowest lr factor ("cyclic")
    clip_norm: float | None = None  # clip the global gradient norm to this value
    patience: int = 0  # early stopping: epochs without improvement before stopping; 0 = off
    monitor: str = "auc"  # key of valid_fn()'s dict used for early stopping / best weights
    mode: str = "max"  # "max" if a larger monitor value is better, else "min"
    checkpoint_dir: str | None = None  # write a checkpoint each epoch; resume from it if present
    time_limit_s: float | None = None  # stop after the first epoch ending past this wall-clock
    seed: int = 0  # seeds torch (init, dropout) and numpy
    num_threads: int | None = None  # torch intra-op threads; None: recforge.threads default
    progress: bool | None = None  # a bar per epoch with the loss; None: only on a terminal

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"TrainConfig.optimizer={self.optimizer!r}; choose one of {OPTIMIZERS}."
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"TrainConfig.schedule={self.schedule!r}; choose one of {SCHEDULES}.")
        if self.mode not in MODES:
            raise ConfigError(f"TrainConfig.mode={self.mode!r}; choose 'max' or 'min'.")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}.")
        for name in ("lr", "weight_decay", "l2", "momentum", "warmup_steps", "patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}.")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ConfigError(f"TrainConfig.clip_norm must be > 0 or None, got {self.clip_norm!r}.")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ConfigError(
                f"TrainConfig.time_limit_s must be > 0 or None, got {self.time_limit_s!r}."
            )
        if self.step_size < 1:
            raise ConfigError(f"TrainConfig.step_size must be >= 1, got {self.step_size!r}.")
