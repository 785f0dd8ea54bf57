"""Consistency on unlabelled images: the net's prediction on x should survive x's perturbed twin.

For an unlabelled batch u the loss is the mean (over examples and classes) of

    (softmax(f(twin(u))) - stop_gradient(softmax(f(u))))^2,

the Pi-model's squared difference of class probabilities (Laine & Aila
2017). Both predictions are deterministic (no dropout, unlike the
Pi-model's two dropout passes): the twin is the only perturbation. The twin
is data, so the gradient flows only through the prediction on the twin:

- ``shadow``: the generator run backwards from hidden layer ``layer`` at u,
  with the current weights (``shadow.twins``);
- ``noise``: u plus Gaussian noise of the same energy as that twin's
  difference from u (the matched-energy placebo);
- ``gaussian``: u plus Gaussian noise of fixed std ``sigma`` (standardised
  pixel units), the Pi-model's input noise without its augmentation.

The weight ramps up as ``exp(-5 (1 - t)^2)`` over the first ``rampup``
fraction of the run's steps, then stays at ``weight``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

from rev_nets import models, shadow
from rev_nets.errors import SettingError
from rev_nets.generator import GeneratorConfig

KINDS = ("none", "shadow", "noise", "gaussian")


@dataclasses.dataclass(frozen=True)
class ConsistencyConfig:
    """Which twin of an unlabelled image the prediction must agree with, and how much that counts.

    Attributes:
      kind: one of ``KINDS``; "none" turns the unlabelled term off.
      layer: the generator's source layer for "shadow" and "noise" (1..depth).
      weight: the term's final weight (after the ramp-up).
      sigma: the noise std of "gaussian", in standardised pixel units.
      rampup: fraction of the run's steps over which the weight ramps up.
    """

    kind: str = "none"
    layer: int = shadow.PAPER_LAYER
    weight: float = 10.0
    sigma: float = 0.3
    rampup: float = 0.3

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @property
    def generates(self) -> bool:
        """Whether the twin comes from the generator ("shadow", and "noise", whose energy is the generated twin's)."""
        return self.kind in ("shadow", "noise")

    def generator(self, options: GeneratorConfig) -> shadow.ShadowConfig:
        """The SHADOW config of this term's twins: the generator ``options`` from this term's source layer, with the
        placebo flag of "noise"."""
        return shadow.ShadowConfig(layer=self.layer, noise_twin=self.kind == "noise", generator=options)

    def check(self, model: models.Model) -> None:
        """Raises ``SettingError`` with one sentence for settings that make no sense for ``model``."""
        if self.kind not in KINDS:
            raise SettingError("kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        top = model.depth if self.enabled else math.inf  # Unused, the record's default may exceed a shallow model's.
        if not (isinstance(self.layer, numbers.Integral) and 1 <= self.layer <= top):
            raise SettingError("layer", f"must be 1..{model.depth} for this model, got {self.layer}.")
        for name in ("weight", "sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SettingError(name, f"must be >= 0 and finite, got {value}.")
        if not 0 <= self.rampup <= 1:
            raise SettingError("rampup", f"must be a fraction of the run's steps in [0, 1], got {self.rampup}.")


def weight_at(config: ConsistencyConfig, step: jax.Array, total_steps: int) -> jax.Array:
    """``weight * exp(-5 (1 - t)^2)`` with ``t = step / (rampup * total_steps)`` clipped to 1."""
    ramp_steps = config.rampup * total_steps
    t = jnp.clip(step / ramp_steps, 0.0, 1.0) if ramp_steps > 0 else 1.0
    return config.weight * jnp.exp(-5.0 * (1.0 - t) ** 2)


def twins(
    model: models.Model,
    params,
    u: jax.Array,
    config: ConsistencyConfig,
    options: GeneratorConfig,
    key: jax.Array,
) -> jax.Array:
    """The perturbed twin of the unlabelled batch ``u`` (data: no gradient flows into it).

    ``options`` are the generator's (SHADOW's record: alpha, sampling,
    switches); the source layer and placebo flag come from ``config``.
    """
    if config.kind == "gaussian":
        return jax.lax.stop_gradient(u + config.sigma * jax.random.normal(key, u.shape, u.dtype))
    return shadow.twins(model, params, u, config.generator(options), key)


def loss(
    model: models.Model,
    params,
    u: jax.Array,
    config: ConsistencyConfig,
    options: GeneratorConfig,
    key: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The consistency loss of the unlabelled batch ``u`` and its metrics.

    ``options`` are the generator's, as in ``twins``. Metrics: ``consistency``
    (the loss), ``twin_agreement`` (fraction of twins whose arg-max class is
    u's) and ``twin_norm_ratio`` (||twin|| / ||u|| over the batch).
    """
    logits = model.forward(params, u).logits
    target = jax.lax.stop_gradient(jax.nn.softmax(logits))
    u_twin = twins(model, params, u, config, options, key)
    logits_twin = model.forward(params, u_twin).logits
    value = jnp.mean((jax.nn.softmax(logits_twin) - target) ** 2)
    return value, {
        "consistency": value,
        "twin_agreement": jnp.mean(jnp.argmax(logits_twin, -1) == jnp.argmax(logits, -1)),
        "twin_norm_ratio": jnp.linalg.norm(u_twin) / jnp.linalg.norm(u),
    }
