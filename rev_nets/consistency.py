"""Consistency on unlabelled images: the net's prediction on x should survive x's perturbed twin.

For an unlabelled batch u the loss is the mean (over examples and classes) of

    (softmax(f(twin(u))) - stop_gradient(softmax(f(u))))^2,

the Pi-model's squared difference of class probabilities (Laine & Aila
2017). Both predictions are deterministic (no dropout, unlike the
Pi-model's two dropout passes): the twin is the only perturbation. The twin
is data, so the gradient flows only through the prediction on the twin:

- ``shadow``: the generator run backwards from hidden layer ``layer`` at u,
  with the current weights (``shadow.synthetic_batch``);
- ``noise``: u plus Gaussian noise of the same energy as that twin's
  difference from u (the matched-energy placebo);
- ``gaussian``: u plus Gaussian noise of fixed std ``sigma`` (standardised
  pixel units), the Pi-model's input noise without its augmentation.

The weight ramps up as ``exp(-5 (1 - t)^2)`` over the first ``rampup``
fraction of the run's steps, then stays at ``weight``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rev_nets import models, shadow

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
    layer: int = 3
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

    def generator(self, generator_config: shadow.ShadowConfig) -> shadow.ShadowConfig:
        """``generator_config`` (alpha, sampling, switches) with this term's source layer and placebo flag."""
        return dataclasses.replace(generator_config, layer=self.layer, noise_twin=self.kind == "noise")

    def check(self, model: models.Model) -> None:
        """Raises ``ValueError`` with one sentence for settings that make no sense for ``model``."""
        if self.kind not in KINDS:
            raise ValueError(f"consistency must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        if self.enabled and not 1 <= self.layer <= model.depth:
            raise ValueError(f"consistency_layer must be 1..{model.depth} for this model, got {self.layer}.")
        if self.weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.weight}.")
        if self.sigma < 0:
            raise ValueError(f"consistency_sigma must be >= 0, got {self.sigma}.")
        if not 0 <= self.rampup <= 1:
            raise ValueError(f"consistency_rampup is a fraction of the run's steps in [0, 1], got {self.rampup}.")


def weight_at(config: ConsistencyConfig, step: jax.Array, total_steps: int) -> jax.Array:
    """``weight * exp(-5 (1 - t)^2)`` with ``t = step / (rampup * total_steps)`` clipped to 1."""
    ramp_steps = config.rampup * total_steps
    t = jnp.clip(step / ramp_steps, 0.0, 1.0) if ramp_steps > 0 else 1.0
    return config.weight * jnp.exp(-5.0 * (1.0 - t) ** 2)


def twin(
    model: models.Model,
    params,
    u: jax.Array,
    config: ConsistencyConfig,
    generator_config: shadow.ShadowConfig,
    key: jax.Array,
) -> jax.Array:
    """The perturbed twin of the unlabelled batch ``u`` (data: no gradient flows into it).

    ``generator_config`` holds the generator's settings (alpha, sampling,
    switches); its source layer and placebo flag are set from ``config``.
    """
    if config.kind == "gaussian":
        return jax.lax.stop_gradient(u + config.sigma * jax.random.normal(key, u.shape, u.dtype))
    return shadow.synthetic_batch(model, params, u, config.generator(generator_config), key)


def loss(
    model: models.Model,
    params,
    u: jax.Array,
    config: ConsistencyConfig,
    generator_config: shadow.ShadowConfig,
    key: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The consistency loss of the unlabelled batch ``u`` and its metrics.

    Metrics: ``consistency`` (the loss), ``twin_agreement`` (fraction of
    twins whose arg-max class is u's) and ``twin_norm_ratio`` (||twin|| /
    ||u|| over the batch).
    """
    logits, _ = model.forward(params, u)
    target = jax.lax.stop_gradient(jax.nn.softmax(logits))
    u_twin = twin(model, params, u, config, generator_config, key)
    logits_twin, _ = model.forward(params, u_twin)
    value = jnp.mean((jax.nn.softmax(logits_twin) - target) ** 2)
    return value, {
        "consistency": value,
        "twin_agreement": jnp.mean(jnp.argmax(logits_twin, -1) == jnp.argmax(logits, -1)),
        "twin_norm_ratio": jnp.linalg.norm(u_twin) / jnp.linalg.norm(u),
    }
