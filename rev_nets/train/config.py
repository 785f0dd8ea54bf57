"""What a run is: its settings (``TrainConfig``, checked before any work) and the errors that stop one."""

from __future__ import annotations

import dataclasses
from typing import Any

from rev_nets import models, shadow
from rev_nets.errors import UserError


class TrainingError(UserError):
    """A run that cannot go on (non-finite loss, a config that differs from the saved one)."""


class DivergedError(TrainingError):
    """The training loss became non-finite: a restart with the same settings would repeat it."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's numbers (saved as ``config.json``)."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.05
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (after linear warm-up) or "constant"
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0  # global-norm clipping; 0 = off
    dropout: float = 0.0
    seed: int = 0
    shadow: shadow.ShadowConfig = dataclasses.field(default_factory=lambda: shadow.ShadowConfig(layer=0))
    eval_batch_size: int = 1000
    log_every: int = 50

    def check(self, model: models.Model) -> None:
        """Raises ``ValueError`` with one sentence for values that make no sense."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        for name in ("grad_clip", "weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}.")
        if self.dropout and isinstance(model, models.NnxModel):
            raise ValueError(models.DROPOUT_REFUSAL)
        self.shadow.check(model)
        shadow.check_generator(model, self.synthetic_config(model))
        if not self.shadow.enabled and self.shadow.start_epoch:
            raise ValueError("shadow_start_epoch needs SHADOW on; give --shadow_layer=1..depth or drop the start.")
        if self.shadow.enabled and self.shadow.start_epoch >= self.epochs:
            raise ValueError(
                f"shadow_start_epoch={self.shadow.start_epoch} leaves no SHADOW epoch in a {self.epochs}-epoch run; "
                "give a smaller start or --shadow_layer=0 for plain backprop."
            )

    def synthetic_config(self, model: models.Model) -> shadow.ShadowConfig:
        """The generator of the synthetic test data: the configured one (from layer 3, or the top of a shallower
        model, when SHADOW is off), no sampling, no placebo."""
        layer = self.shadow.layer or min(3, model.depth)
        return dataclasses.replace(self.shadow, layer=layer, rho=1.0, noise_twin=False)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{**d, "shadow": shadow.ShadowConfig(**d["shadow"])})
