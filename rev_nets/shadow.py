"""SHADOW: train on the net's own synthetic inputs as well as the real ones.

For a real batch, the generator runs the model's ``features`` backwards from
hidden layer ``layer`` at that batch (``generator.reverse``; under jit its
forward and the loss's are one computation for a plain net, while a
BatchNorm net's generator runs a forward of its own, with the batch's
statistics held as constants) into a synthetic
batch (data: no gradient flows through its generation), labelled like the
real inputs they came from, and the loss is

    (CE(real) + w * CE(synthetic)) / (1 + w),

the mean over the enlarged training set when ``w = 1``, so that SHADOW does
not simply enlarge the step size.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rev_nets import generator, models
from rev_nets.errors import SettingError
from rev_nets.generator import GeneratorConfig

TWIN_STATISTICS = ("separate", "joint", "twin_updated")
PAPER_LAYER = 3  # The paper's source layer: the experiments' default, and the synthetic test data's when SHADOW is off.


@dataclasses.dataclass(frozen=True)
class ShadowConfig:
    """How synthetic inputs are made and weighted; off (``layer=0``) by default.

    Attributes:
      layer: source hidden layer (1..depth); 0 turns SHADOW off.
      weight: ``w``, the synthetic examples' loss weight.
      noise_twin: placebo arm: replace each synthetic input by the real input
        plus Gaussian noise of the same energy as (synthetic - real).
      start_epoch: epochs of plain backprop before the synthetic examples
        enter the loss (until then their weight is 0; they are still made,
        so the synthetic metrics stay comparable, and a non-finite synthetic
        loss still stops the run); with ``twin_statistics="separate"`` only,
        the one that keeps the twins out of the batch statistics.
      generator: the generator's options (sampling, alpha, smoothing, switches).
      twin_statistics: on a net with BatchNorm, whose statistics the twins'
        forward uses and the running averages take in (``TWIN_STATISTICS``):
        ``separate``, the twins' own, discarded (the real term and the running
        statistics stay backprop's); ``joint``, one forward of real and twins
        together ("add them to the training set"), whose statistics both terms
        use and the running averages take; ``twin_updated``, the twins' own,
        averaged into the running statistics after the real batch's.
    """

    layer: int = 0
    weight: float = 1.0
    noise_twin: bool = False
    start_epoch: float = 0.0
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    twin_statistics: str = "separate"

    @property
    def enabled(self) -> bool:
        return self.layer > 0

    def check(self, model: models.Model) -> None:
        """Raises ``SettingError`` with one sentence for settings that make no sense for ``model``.

        The generator's options were checked when its record was made.
        """
        if not (isinstance(self.layer, numbers.Integral) and 0 <= self.layer <= model.depth):
            raise SettingError("layer", f"must be 0 (off) or 1..{model.depth} for this model, got {self.layer}.")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise SettingError("weight", f"must be >= 0 and finite, got {self.weight}.")
        if self.twin_statistics not in TWIN_STATISTICS:
            raise SettingError(
                "twin_statistics", f"must be one of {', '.join(TWIN_STATISTICS)}, got {self.twin_statistics!r}."
            )
        if not (math.isfinite(self.start_epoch) and self.start_epoch >= 0):
            raise SettingError(
                "start_epoch", f"must be >= 0 and finite (0 = SHADOW from the first step), got {self.start_epoch}."
            )
        if self.twin_statistics != "separate" and not (self.layer and models.holds_stats(model)):
            absent = "SHADOW is off (layer 0)" if not self.layer else "this model has no BatchNorm"
            raise SettingError(
                "twin_statistics",
                f"{self.twin_statistics!r} says which batch statistics the twins enter, but {absent}, so it would "
                "do nothing; leave it 'separate'.",
            )
        if self.start_epoch and self.twin_statistics != "separate":
            raise SettingError(
                "twin_statistics",
                f"{self.twin_statistics!r} puts the twins into the batch statistics from the first step, so it cannot "
                f"wait for start_epoch={self.start_epoch}; use 'separate', or start_epoch=0.",
            )


def check_generator(model: models.Model, config: ShadowConfig) -> None:
    """Traces the generator of ``config`` on ``model`` abstractly (nothing computed), so that a primitive it cannot
    reverse or an undefined calibrated alpha stops a run before any work, with ``generator.reverse``'s sentence."""
    params = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
    jax.eval_shape(lambda p, v: twins(model, p, v, config, jax.random.key(0)), params, x)


def weight_at(config: ShadowConfig, step: jax.Array, steps_per_epoch: int) -> jax.Array:
    """The synthetic examples' loss weight at ``step``: 0 before ``start_epoch``, then ``weight``."""
    start = round(config.start_epoch * steps_per_epoch)
    return jnp.where(step >= start, config.weight, 0.0)


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy against integer labels, their one-hot targets smoothed by ``smoothing``."""
    if not smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


def error_rate(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose arg-max logit is not the label."""
    return jnp.mean(jnp.argmax(logits, -1) != labels)


def noise_twin(key: jax.Array, x: jax.Array, x_syn: jax.Array) -> jax.Array:
    """``x`` plus Gaussian noise with, per example, the energy of ``x_syn - x``."""
    axes = tuple(range(1, x.ndim))
    noise = jax.random.normal(key, x.shape, x.dtype)
    scale = jnp.linalg.norm((x_syn - x).reshape(x.shape[0], -1), axis=1) / jnp.linalg.norm(
        noise.reshape(x.shape[0], -1), axis=1
    )
    return x + noise * jnp.expand_dims(scale, axes)


def twins(
    model: models.Model,
    params,
    x: jax.Array,
    config: ShadowConfig,
    key: jax.Array | None,
    h: jax.Array | None = None,
    alpha: tuple[jax.Array, ...] | None = None,
) -> jax.Array:
    """The synthetic twins of ``x`` from source layer ``config.layer`` (data: gradients stopped).

    ``h`` is that layer as a forward pass with dropout recorded it (default:
    ``model.features`` at ``x``); the generator transposes the dropout-free
    forward at ``x`` either way. ``alpha`` (one value per linear map, e.g.
    frozen data-fitted ones) overrides the config's.
    """
    gen_key, noise_key = jax.random.split(key) if key is not None else (None, None)
    params = jax.lax.stop_gradient(params)
    features = lambda v: model.features(params, v, config.layer)
    options = config.generator if alpha is None else dataclasses.replace(config.generator, alpha=alpha)
    x_syn = generator.reverse(features, x, h=h, key=gen_key, config=options)
    if config.noise_twin:
        x_syn = noise_twin(noise_key, x, x_syn)
    return jax.lax.stop_gradient(x_syn)


class LossAux(NamedTuple):
    """What ``loss`` returns beside its value: the step's metrics, and the batch statistics the running averages
    take in, in order (``None`` without BatchNorm)."""

    metrics: dict[str, jax.Array]
    stats: tuple[Any, ...] | None = None


def loss(
    model: models.Model,
    params,
    x: jax.Array,
    y: jax.Array,
    config: ShadowConfig,
    key: jax.Array,
    *,
    dropout: float = 0.0,
    weight: jax.Array | float | None = None,
    alpha: tuple[jax.Array, ...] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, LossAux]:
    """The SHADOW loss of a real batch (plain cross-entropy when SHADOW is off), in training mode.

    ``weight`` overrides ``config.weight`` (a traced value, so that a schedule
    such as ``weight_at`` changes it without a new trace), and ``alpha`` the
    generator's alphas (``twins``); ``label_smoothing`` smooths both terms'
    targets. On a net with BatchNorm the generator runs backwards through
    each layer's scale on the real batch's statistics, and the twins'
    forward uses the statistics ``config.twin_statistics`` says (by default
    their own, discarded, so that the real term and the running statistics
    are plain backprop's). Returns the loss and a ``LossAux``
    (``jax.value_and_grad``'s ``has_aux`` form): metrics (real and synthetic
    cross-entropy, against the smoothed targets, and error, the
    synthetic-to-real input norm ratio) and the batch statistics for the
    running update.
    """
    real_key, syn_key, gen_key = jax.random.split(key, 3)
    real = model.forward(params, x, key=real_key, dropout=dropout)
    taken = lambda *states: None if real.stats is None else states
    ce_real = cross_entropy(real.logits, y, label_smoothing)
    metrics = {"ce_real": ce_real, "error_real": error_rate(real.logits, y)}
    if not config.enabled:
        return ce_real, LossAux(metrics, taken(real.stats))
    h = real.hiddens[config.layer - 1].h if dropout and real.hiddens is not None else None
    at_batch = model.with_stats(params, jax.lax.stop_gradient(real.stats))
    x_syn = twins(model, at_batch, x, config, gen_key, h, alpha)
    if config.twin_statistics == "joint":
        both = model.forward(params, jnp.concatenate([x, x_syn]), key=syn_key, dropout=dropout)
        logits_real, logits_syn = jnp.split(both.logits, 2)
        ce_real = cross_entropy(logits_real, y, label_smoothing)
        metrics = {"ce_real": ce_real, "error_real": error_rate(logits_real, y)}
        stats = taken(both.stats)
    else:
        syn = model.forward(params, x_syn, key=syn_key, dropout=dropout)
        logits_syn = syn.logits
        stats = taken(real.stats, syn.stats) if config.twin_statistics == "twin_updated" else taken(real.stats)
    ce_syn = cross_entropy(logits_syn, y, label_smoothing)
    metrics |= {
        "ce_synthetic": ce_syn,
        "error_synthetic": error_rate(logits_syn, y),
        "norm_ratio": jnp.linalg.norm(x_syn) / jnp.linalg.norm(x),
    }
    w = config.weight if weight is None else weight
    return (ce_real + w * ce_syn) / (1.0 + w), LossAux(metrics, stats)


def term_gradients(
    model: models.Model, params, x: jax.Array, y: jax.Array, config: ShadowConfig, key: jax.Array, **loss_options
) -> tuple[Any, Any]:
    """The gradients of ``loss``'s two cross-entropy terms apart, (real, synthetic), as a training step takes them
    (``fixed`` parameters held): which parameters the twins push, and how hard beside the real images. The
    loss's gradient is their weighted mean. ``loss_options``: ``loss``'s keywords (``label_smoothing``, ...)."""

    def terms(p):
        metrics = loss(model, models.hold_fixed(model, p), x, y, config, key, **loss_options)[1].metrics
        return jnp.stack([metrics["ce_real"], metrics["ce_synthetic"]])

    stacked = jax.jacrev(terms)(params)  # One forward and one set of twins for both terms.
    return jax.tree.map(lambda g: g[0], stacked), jax.tree.map(lambda g: g[1], stacked)
