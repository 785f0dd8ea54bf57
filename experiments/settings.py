"""The training entry points' command line: each flag names one field of the run's record (``RunConfig``).

A flag carries no default of its own: the entry point's config
(``experiments/configs``) is the record, its values are shown as the flags'
defaults, and only a flag the user typed replaces its field. The library
names settings by their config paths (``train.shadow.generator.rho``); this
table is the one place that knows their flag names; ``cli`` reads typed
flags into a record with it and writes a record's overrides (a sweep cell)
as flags.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from experiments.cli import Flag
from rev_nets import consistency, errors, shadow
from rev_nets.train import config as train_config


def parse_alpha(text: str) -> float | str | None:
    """``--alpha``: None for 'calibrated' (or 0, as older commands wrote it), 'formula', 'data', or a positive
    number."""
    if text in ("calibrated", "0", "0.0"):
        return None
    if text in ("formula", "data"):
        return text
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise errors.SettingError(
            "train.shadow.generator.alpha",
            f"must be 'calibrated', 'formula', 'data' or a positive number, got {text!r}.",
        )
    return number


def parse_arguments(text: str) -> dict[str, Any]:
    """``--model_args``: a JSON object."""
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError as error:
        raise errors.SettingError("model.arguments", f"must be a JSON object, got {text!r} ({error}).") from None
    if not isinstance(arguments, dict):
        raise errors.SettingError("model.arguments", f"must be a JSON object, got {text!r}.")
    return arguments


def _show_alpha(alpha) -> str:
    return "calibrated" if alpha is None else f"{alpha:g}" if isinstance(alpha, float) else str(alpha)


TRAINING = (
    Flag("shadow_layer", "train.shadow.layer", "SHADOW source layer: 0 = plain backprop, 1..depth = from h<layer>."),
    Flag(
        "shadow_weight",
        "train.shadow.weight",
        "Loss weight w of the synthetic examples: (CE_real + w CE_syn) / (1 + w).",
    ),
    Flag(
        "sampling_rho",
        "train.shadow.generator.rho",
        "Keep-probability of the sampling mask during generation (1 = off).",
    ),
    Flag(
        "smooth_sigma", "train.shadow.generator.smooth_sigma", "Gaussian blur of synthetic images, in pixels (0 = off)."
    ),
    Flag(
        "alpha",
        "train.shadow.generator.alpha",
        "Generator scale: 'calibrated' (c / (rho fan_in mean(W^2)) per linear map, refused after a residual sum), "
        "'formula' (that formula on every map), 'data' (fitted on a batch at each epoch's start, then frozen), "
        "or one number for every map.",
        parse=parse_alpha,
        show=_show_alpha,
    ),
    Flag(
        "alpha_scale",
        "train.shadow.generator.alpha_scale",
        "Multiplies every layer's alpha; synthetic inputs scale by alpha_scale**layer.",
    ),
    Flag(
        "plain_vjp",
        "train.shadow.generator.plain_vjp",
        "Primitives the generator reverses by their plain VJP (Jacobian transpose) instead of refusing them, for "
        "a net that is not only linear maps, ReLU and pooling: e.g. --plain_vjp=erfc,mul for exact GELU. "
        "Empty = refuse.",
        parse=tuple,
    ),
    Flag(
        "shadow_start_epoch",
        "train.shadow.start_epoch",
        "Epochs of plain backprop before the synthetic examples enter the loss (0 = from the start).",
    ),
    Flag(
        "noise_twin",
        "train.shadow.noise_twin",
        "Placebo: real input + Gaussian noise with the energy of (synthetic - real), per example.",
    ),
    Flag(
        "twin_statistics",
        "train.shadow.twin_statistics",
        "BatchNorm nets: the twins' forward normalises by their own statistics, discarded (separate), by those of "
        "real and twins together (joint, used by both terms and the running averages), or by their own, averaged "
        "into the running statistics after the real batch's (twin_updated).",
        choices=shadow.TWIN_STATISTICS,
    ),
    Flag(
        "num_labels",
        "train.num_labels",
        "Few-label training: keep this many training labels, balanced per class and drawn with --seed from the "
        "images outside the validation split; the others become the unlabelled set. 0 = every label.",
    ),
    Flag(
        "steps",
        "train.steps",
        "Length of a few-label run in steps, evaluated and checkpointed every steps/epochs steps "
        "(0 = as many steps as --epochs full-data epochs).",
    ),
    Flag(
        "consistency",
        "train.consistency.kind",
        "Unlabelled term (needs --num_labels): the squared difference of the softmax on an unlabelled image and on "
        "its twin from h<consistency_layer> (shadow), a matched-energy noise twin (noise), or x + "
        "N(0, consistency_sigma^2) (gaussian).",
        choices=consistency.KINDS,
    ),
    Flag("consistency_layer", "train.consistency.layer", "Source layer of the consistency twin (shadow, noise)."),
    Flag(
        "consistency_weight", "train.consistency.weight", "Weight of the consistency term, reached after its ramp-up."
    ),
    Flag(
        "consistency_rampup",
        "train.consistency.rampup",
        "Fraction of the run's steps over which the consistency weight ramps up.",
    ),
    Flag(
        "consistency_sigma",
        "train.consistency.sigma",
        "Noise std of --consistency=gaussian, in standardised pixel units.",
    ),
    Flag("dropout", "train.dropout", "Dropout rate on every hidden layer during training."),
    Flag("epochs", "train.epochs", "Training epochs."),
    Flag("batch_size", "train.batch_size", "Real examples per step (SHADOW adds as many synthetic ones)."),
    Flag("eval_batch_size", "train.eval_batch_size", "Examples per evaluation step."),
    Flag("log_every", "train.log_every", "Steps between progress lines."),
    Flag("learning_rate", "train.learning_rate", "Peak learning rate."),
    Flag("optimizer", "train.optimizer", "SGD with momentum --momentum, or Adam.", choices=train_config.OPTIMIZERS),
    Flag("momentum", "train.momentum", "SGD momentum."),
    Flag(
        "schedule",
        "train.schedule",
        "Learning-rate schedule after warm-up: cosine or linear decay to --final_lr_fraction, or constant.",
        choices=train_config.SCHEDULES,
    ),
    Flag("warmup_epochs", "train.warmup_epochs", "Linear learning-rate warm-up, in epochs."),
    Flag(
        "warmup_fraction",
        "train.warmup_fraction",
        "Or the warm-up as a fraction of the run's steps, the same share at any --epochs (set one of the two).",
    ),
    Flag("warmup_from", "train.warmup_from", "The warm-up's first learning rate, as a fraction of the peak."),
    Flag(
        "final_lr_fraction", "train.final_lr_fraction", "The learning rate at the run's end, as a fraction of the peak."
    ),
    Flag("nesterov", "train.nesterov", "Nesterov momentum (SGD)."),
    Flag(
        "norm_lr_scale",
        "train.norm_lr_scale",
        "Learning rate of BatchNorm shifts and scales, as a multiple of --learning_rate (SGD's decay per step kept).",
    ),
    Flag("lookahead_every", "train.lookahead_every", "Every N steps, set the params to their slow average (0 = off)."),
    Flag("label_smoothing", "train.label_smoothing", "Label smoothing of both loss terms' targets."),
    Flag(
        "test_time_augmentation",
        "train.test_time_augmentation",
        "Evaluation views averaged: 0 the image; 1 and its mirror; 2 and both shifted by one pixel.",
    ),
    Flag(
        "weight_decay",
        "train.weight_decay",
        "L2 weight decay added to the gradient: each step (before momentum) takes learning rate x this of each "
        "weight, or with --decoupled_weight_decay this at the schedule's peak whatever the learning rate.",
    ),
    Flag(
        "decoupled_weight_decay",
        "train.decoupled_weight_decay",
        "Keep the decay per step fixed when --learning_rate changes (airbench94's; SGD only).",
    ),
    Flag("grad_clip", "train.grad_clip", "Clip gradients to this global norm (0 = off)."),
    Flag(
        "augment",
        "train.augment",
        "Augment each training image in the step, its own draw: flip (horizontal, p=1/2), translate (up to 2 "
        "pixels each way, border reflected), alternating_flip (each image's fixed coin, inverted on odd epochs); "
        "e.g. --augment=flip,translate. Empty = off.",
        parse=tuple,
    ),
    Flag("seed", "train.seed", "Seed of the initial weights, the batch order, dropout and sampling."),
    Flag(
        "cpu_devices",
        "cpu_devices",
        "On a CPU host, split it into this many JAX devices and shard each batch over them: XLA runs each "
        "device's convolutions on its own thread, so this is how a CNN uses every core. Ignored on GPU/TPU.",
    ),
    Flag(
        "num_validation",
        "num_validation",
        "Training examples held out as the validation split (for tuning); 0 trains on all of them.",
    ),
    Flag(
        "model",
        "model.factory",
        "The model's factory, package.module:factory: a built-in net (rev_nets.nets:...) or a Flax NNX or linen "
        "module, called as factory(rngs=nnx.Rngs(seed), **--model_args) for NNX, e.g. rev_nets.nnx_zoo:residual_cnn.",
    ),
    Flag(
        "model_args",
        "model.arguments",
        "Keyword arguments of --model's factory, as a JSON object: '{\"channels\": [32, 64]}'.",
        parse=parse_arguments,
        show=lambda arguments: json.dumps(dict(arguments), sort_keys=True),
    ),
)


def whole_numbers(path: str) -> Callable[[list[str]], list[int]]:
    """The parser of a list flag of whole numbers (e.g. ``--channels=32,64,128``) for the field at ``path``."""

    def parse(texts: list[str]) -> list[int]:
        try:
            return [int(text) for text in texts]
        except ValueError:
            raise errors.SettingError(path, f"must be whole numbers separated by commas, got {','.join(texts)!r}.")

    return parse
