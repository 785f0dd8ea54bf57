"""What a run is: its settings (``TrainConfig``, checked before any work) and the errors that stop one."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

from rev_nets import consistency, generator, models, shadow
from rev_nets.data import augmentation
from rev_nets.errors import SettingError, UserError, setting_scope


class TrainingError(UserError):
    """A run that cannot go on (non-finite loss, a config that differs from the saved one)."""


class DivergedError(TrainingError):
    """Training blew up (a non-finite or exploding loss or params): a restart with the same settings would repeat
    it. ``record`` holds the step, the epoch and the cause."""

    def __init__(self, message: str, record: dict[str, Any] | None = None):
        super().__init__(message)
        self.record = record or {}


SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's numbers (saved as ``config.json``); SHADOW is off by default."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.05
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0  # L2 term added to the gradient, scaled by the learning rate each step
    # True: weight_decay is the fraction of each weight removed per step at the schedule's peak (before momentum),
    # whatever learning_rate is, as airbench94 sets it; False: that fraction is learning_rate * weight_decay.
    decoupled_weight_decay: bool = False
    schedule: str = "cosine"  # after the warm-up: "cosine", "linear" (both to final_lr_fraction) or "constant"
    warmup_epochs: float = 0.0
    warmup_fraction: float = 0.0  # or the warm-up as a fraction of the run's steps, kept when epochs change
    warmup_from: float = 0.0  # the warm-up's first learning rate, as a fraction of learning_rate
    final_lr_fraction: float = 0.0  # the learning rate at the run's end (cosine, linear), as a fraction
    nesterov: bool = False
    norm_lr_scale: float = 1.0  # BatchNorm shifts and scales: learning rate times this, same decay per step (SGD)
    lookahead_every: int = 0  # every N steps, params <- their slow average (0 = off); see optimizer.lookahead
    label_smoothing: float = 0.0  # on both SHADOW terms
    # Test-time views: 0 the image; 1 and its mirror; 2 and both 1-pixel shifts. Judged once, at the run's last
    # step (``<split>_tta_error``); every epoch's ``<split>_error`` is on the images as they are.
    test_time_augmentation: int = 0
    grad_clip: float = 0.0  # global-norm clipping; 0 = off
    dropout: float = 0.0
    seed: int = 0
    shadow: shadow.ShadowConfig = dataclasses.field(default_factory=shadow.ShadowConfig)
    eval_batch_size: int = 1000
    log_every: int = 50
    num_labels: int = 0  # 0: every training label; N: few-label training on a balanced N-label subset
    steps: int = 0  # few-label runs: total steps, in `epochs` evaluation rounds; 0: as many as full-data epochs
    consistency: consistency.ConsistencyConfig = dataclasses.field(default_factory=consistency.ConsistencyConfig)
    augment: tuple[str, ...] = ()  # of data.augmentation.KINDS, drawn per example in the train step

    def __post_init__(self):
        if isinstance(self.augment, (list, str)):  # A JSON list, or one kind: a tuple, so the record stays hashable.
            object.__setattr__(
                self, "augment", (self.augment,) if isinstance(self.augment, str) else tuple(self.augment)
            )

    def check(self, model: models.Model) -> None:
        """Raises ``SettingError`` with one sentence for values that make no sense, naming the setting by its path
        in this record (``shadow.layer``, ``shadow.generator.alpha``, ...)."""
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if not (_whole(getattr(self, name)) and getattr(self, name) >= 1):
                raise SettingError(name, f"must be a whole number >= 1, got {getattr(self, name)}.")
        if not _whole(self.seed):
            raise SettingError("seed", f"must be a whole number >= 0 (numpy's and JAX's seeds), got {self.seed}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise SettingError("learning_rate", f"must be positive and finite, got {self.learning_rate}.")
        if self.optimizer not in OPTIMIZERS:
            raise SettingError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise SettingError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        if self.warmup_epochs > self.epochs:
            raise SettingError(
                "warmup_epochs",
                f"must be at most the run's {self.epochs} epochs, got {self.warmup_epochs}; shorten it.",
            )
        for name in ("warmup_from", "warmup_fraction", "final_lr_fraction", "label_smoothing"):
            if not (math.isfinite(getattr(self, name)) and 0 <= getattr(self, name) < 1):
                raise SettingError(name, f"must be in [0, 1), got {getattr(self, name)}.")
        if not (math.isfinite(self.norm_lr_scale) and self.norm_lr_scale > 0):
            raise SettingError(
                "norm_lr_scale", f"must be positive and finite (1 = the learning rate), got {self.norm_lr_scale}."
            )
        if not isinstance(self.nesterov, bool) or (self.nesterov and self.optimizer != "sgd"):
            raise SettingError(
                "nesterov", f"must be True or False, and True only with optimizer='sgd', got {self.nesterov!r}."
            )
        decoupled = self.decoupled_weight_decay
        if not isinstance(decoupled, bool) or (decoupled and self.optimizer != "sgd"):
            raise SettingError(
                "decoupled_weight_decay",
                f"must be True or False, and True only with optimizer='sgd' (Adam rescales the decay it is given), "
                f"got {decoupled!r}.",
            )
        if not _whole(self.lookahead_every):
            raise SettingError("lookahead_every", f"must be a whole number >= 0 (0 = off), got {self.lookahead_every}.")
        if not 0.0 <= self.dropout < 1.0:
            raise SettingError("dropout", f"must be in [0, 1), got {self.dropout}.")
        for name in ("grad_clip", "weight_decay", "warmup_epochs", "momentum"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SettingError(name, f"must be >= 0 and finite (0 = off), got {value}.")
        if self.warmup_epochs and self.warmup_fraction:
            raise SettingError(
                "warmup_fraction", "and warmup_epochs both set the warm-up's length; set one of them, the other 0."
            )
        self._check_labels(model)
        augmentation.check(self.augment, model.input_shape, self.test_time_augmentation)
        if self.dropout and isinstance(model, models.ModuleModel):
            raise SettingError(
                "dropout",
                "must be 0 for an NNX or linen model, which drops out with its own dropout layers at the rates it was "
                f"built with (set them through its factory's arguments), got {self.dropout}.",
            )
        models.check_training_forward(model)
        with setting_scope("shadow"):
            self.shadow.check(model)
        with setting_scope("shadow.generator"):  # An undefined calibrated alpha, too many per-map alphas.
            shadow.check_generator(model, self.synthetic_config(model))
            if self.consistency.generates:  # The unlabelled twins' generator, traced abstractly too.
                shadow.check_generator(model, self.consistency.generator(self.shadow.generator))
        if not self.shadow.enabled and self.shadow.start_epoch:
            raise SettingError("shadow.start_epoch", "needs SHADOW on; give shadow.layer=1..depth or drop the start.")
        if self.shadow.enabled and self.shadow.start_epoch >= self.epochs:
            raise SettingError(
                "shadow.start_epoch",
                f"must be below the run's {self.epochs} epochs to leave a SHADOW epoch, got {self.shadow.start_epoch}; "
                "give a smaller start, or shadow.layer=0 for plain backprop.",
            )

    def _check_labels(self, model: models.Model) -> None:
        if not (_whole(self.num_labels) and self.num_labels % model.num_classes == 0):
            raise SettingError(
                "num_labels",
                f"must be a multiple of the {model.num_classes} classes (the subset is balanced per class), or 0 for "
                f"every label; got {self.num_labels}.",
            )
        if not (_whole(self.steps) and self.steps % self.epochs == 0):
            raise SettingError(
                "steps",
                f"must be a multiple of epochs={self.epochs} (each epoch is steps/epochs steps, then an evaluation "
                f"and a checkpoint), or 0, got {self.steps}; round it or change epochs.",
            )
        if self.steps and not self.num_labels:
            raise SettingError("steps", "sets the length of a few-label run; give num_labels too, or drop steps.")
        with setting_scope("consistency"):
            self.consistency.check(model)
        if self.consistency.enabled and not self.num_labels:
            raise SettingError(
                "consistency.kind",
                "needs unlabelled images: give num_labels=N (the other training images become the unlabelled set), "
                "or turn the consistency term off (kind 'none').",
            )
        if self.consistency.enabled and models.holds_stats(model):
            raise SettingError(
                "consistency.kind",
                "is not defined for a net with BatchNorm (its consistency term runs in evaluation mode, on running "
                "statistics that the term itself would train against); turn the consistency term off (kind 'none').",
            )
        if self.consistency.enabled and self.shadow.generator.alpha == "data":
            raise SettingError(
                "shadow.generator.alpha",
                "must not be 'data' with a consistency term (it is fitted for SHADOW's source layer only); "
                "give None (calibrated), 'formula' or a number.",
            )

    def synthetic_config(self, model: models.Model) -> shadow.ShadowConfig:
        """The generator of the synthetic test data: the configured one (from the paper's layer, or the top of a
        shallower model, when SHADOW is off), no sampling, no placebo."""
        layer = self.shadow.layer or min(shadow.PAPER_LAYER, model.depth)
        generator = dataclasses.replace(self.shadow.generator, rho=1.0)
        return dataclasses.replace(self.shadow, layer=layer, noise_twin=False, generator=generator)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """The record ``to_json`` wrote, or an older one whose shadow record held the generator's options flat."""
        parts = {"shadow": _shadow_from_json(d["shadow"])}
        if "consistency" in d:
            parts["consistency"] = consistency.ConsistencyConfig(**d["consistency"])
        return cls(**{**d, **parts})


def _whole(value) -> bool:
    """A whole number >= 0 (not a float, not NaN)."""
    return isinstance(value, numbers.Integral) and value >= 0


def _shadow_from_json(d: dict[str, Any]) -> shadow.ShadowConfig:
    """A shadow record, nested or flat (runs written before the generator's options had their own record)."""
    flat = {k: v for k, v in d.items() if k in generator.OPTIONS}
    rest = {k: v for k, v in d.items() if k not in generator.OPTIONS and k != "generator"}
    options = generator.GeneratorConfig(**d.get("generator", {}), **flat)
    return shadow.ShadowConfig(**rest, generator=options)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run's whole record: the data, the model (by factory and arguments), the training settings.

    ``cpu_devices`` says how the run uses a CPU host, not what it computes
    (its metric lines record the device count), so config.json leaves it out.
    """

    dataset: str
    model: models.ModelConfig
    train: TrainConfig = TrainConfig()
    num_validation: int = 5000
    cpu_devices: int = 1

    def __post_init__(self):
        if not (isinstance(self.num_validation, int) and self.num_validation >= 0):
            raise SettingError(
                "num_validation", f"must be a whole number >= 0 (0 = no validation split), got {self.num_validation}."
            )
        if not (isinstance(self.cpu_devices, int) and self.cpu_devices >= 1):
            raise SettingError("cpu_devices", f"must be >= 1, got {self.cpu_devices}.")

    def check(self, model: models.Model) -> None:
        """``TrainConfig.check`` for the model this record builds; errors name ``train.<setting>``."""
        with setting_scope("train"):
            self.train.check(model)

    def to_json(self) -> dict[str, Any]:
        """What config.json records (``cpu_devices`` aside)."""
        record = {"dataset": self.dataset, "model": self.model.to_json(), "num_validation": self.num_validation}
        return record | {"train": self.train.to_json()}


def config_field(record: Any, path: str) -> Any:
    """The field at dotted ``path`` of a record (``"train.shadow.layer"``): dataclasses and mappings."""
    for part in path.split("."):
        record = record[part] if isinstance(record, Mapping) else getattr(record, part)
    return record


def _replace(record: Any, path: str, value: Any, where: str) -> Any:
    head, _, rest = path.partition(".")
    new = _replace(config_field(record, head), rest, value, f"{where}.{head}".lstrip(".")) if rest else value
    if isinstance(record, Mapping):
        return {**record, head: new}
    with setting_scope(where) if where else contextlib.nullcontext():
        return dataclasses.replace(record, **{head: new})


def override(record: Any, overrides: Mapping[str, Any]) -> Any:
    """``record`` with each ``{dotted path: value}`` set in order, e.g. a sweep cell ``{"train.shadow.layer": 0}``.

    Each record on a path is rebuilt, so its own checks run, and a ``SettingError`` names the full path.
    """
    for path, value in overrides.items():
        record = _replace(record, path, value, "")
    return record
