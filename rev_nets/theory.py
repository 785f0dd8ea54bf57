"""The random-net generative model of the paper's sections 1-2 and its recovery by the feedforward net.

Widths ``n_0`` (input) .. ``n_L``; ``W_l`` has i.i.d. N(0, 1) entries and is held as a plain
``(n_{l-1}, n_l)`` array, the ``w`` of a ``layers.Dense(n_l)`` with fan-in ``n_{l-1}``, so that
``x @ W`` is the paper's ``W^T x``. For a k-sparse non-negative top layer ``h^(L)``:

    generation  h^(l-1) = relu(alpha_l W_l h^(l)) * Bernoulli(rho),   alpha_l = 2 / (rho n_{l-1})
    recovery    h_hat^(l) = relu(W_l^T h_hat^(l-1) + b_l),             h_hat^(0) = x = h^(0)

Generation is the generator of a Dense layer at exactly that alpha (``generator.reverse`` of
``h -> h @ W`` gives the same ``relu(alpha h W^T)``, written out here). The thresholding
bias is ``b_l = -c ||h^(l)|| sqrt(2 / (rho n_{l-1}))``: ``c`` standard deviations of the
off-support noise of ``W_l^T h^(l-1)`` (Theorem 2.3, Lemma 2.5). The theorem uses the true
norm ``||h^(l)||`` (an oracle, ``threshold_biases``); ``recover(..., c=c)`` reads the noise
level off each layer's own input instead.

All functions act on a batch (leading axis). ``simulate`` runs many trials in one jitted call:
``lax.map`` over weight draws, so only one draw's weights are in memory at a time, and each
draw's hidden vectors and masks as one batch, so its matmuls are single GEMMs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.stats import norm
from scipy import special

from rev_nets import layers as L
from rev_nets.errors import InputError

Weights = tuple[jax.Array, ...]

# Bias multipliers c evaluated by ``simulate`` by default: 0 (no bias) to 6 in steps of 1/2.
DEFAULT_CS = tuple(0.5 * i for i in range(13))


def alpha(n: int, rho: float) -> float:
    """The generator's scale ``2 / (rho n)``: undoes ReLU halving and sampling for N(0, 1) weights."""
    return 2.0 / (rho * n)


def theorem_rate(k, n, rho):
    """Theorem 2.3's rate ``k / (rho n)`` (constants and logs left out): relative squared error of recovery."""
    return np.asarray(k) / (rho * np.asarray(n))


def exact_recovery_c(m: int, eps: float) -> float:
    """``sqrt(2 ln(m / eps))``: the c at which all m off-support units stay below the bias, up to probability eps.

    A union bound with the Gaussian tail ``P(Z > c) <= exp(-c^2 / 2)``.
    """
    return math.sqrt(2.0 * math.log(m / eps))


def predicted_error(k, m, n, rho, c=0.0, *, recovery_relu: bool = True, generation_relu: bool = True):
    """Expected relative squared error ``||h_hat - h||^2 / ||h||^2`` of one layer's recovery.

    Treats ``(W^T x)_i`` as ``h_i`` plus Gaussian noise of variance ``g ||h||^2 / (rho n)``, where
    ``g = 2`` when the generated layer has a ReLU (``alpha = 2 / (rho n)``) and 1 without one
    (``alpha = 1 / (rho n)``). With the bias ``-c`` noise standard deviations, each of the ``k``
    support units (assumed well above the bias) contributes ``(1 + c^2)`` noise variances and each
    of the ``m - k`` others ``E[relu(Z - c)^2] = (1 + c^2) Phi(-c) - c phi(c)``; the linear
    estimate ``W^T x`` (``recovery_relu=False``, no bias) contributes one variance per unit.

    So the error is ``2 (1 + c^2) k / (rho n)`` plus a tail term: the theorem's ``k / (rho n)``
    rate once ``c`` is near ``sqrt(2 ln(m / k))``; without a bias it is ``(m + k) / (rho n)``
    (ReLU) or ``2 m / (rho n)`` (linear). Works on numbers or numpy arrays.
    """
    k, m, n = (np.asarray(v, np.float64) for v in (k, m, n))
    variance = (2.0 if generation_relu else 1.0) / (rho * n)
    if not recovery_relu:
        return variance * m
    tail = (1.0 + c**2) * special.ndtr(-c) - c * np.exp(-0.5 * c**2) / math.sqrt(2.0 * math.pi)
    return variance * (k * (1.0 + c**2) + (m - k) * tail)


def predicted_error_for(h: jax.Array, n: int, rho: float, c, *, generation_relu: bool = True) -> jax.Array:
    """``predicted_error``'s model for given non-negative vectors ``h`` (a batch), any values, per example.

    With ``(W^T x)_i = h_i + sigma Z``, ``sigma^2 = g ||h||^2 / (rho n)``, and ``t = c - h_i / sigma``,
    ``E[(relu(h_i + sigma Z - c sigma) - h_i)^2] = sigma^2 ((1 + c^2) Q(t) + (t - 2c) phi(t)) + h_i^2 Phi(t)``
    (``Q = 1 - Phi``). Units far above the bias give ``(1 + c^2) sigma^2``, zeros the tail term, and
    small nonzero units (dense layers) their own value when the bias cuts them off.
    """
    variance = (2.0 if generation_relu else 1.0) / (rho * n) * jnp.sum(jnp.square(h), -1, keepdims=True)
    sigma = jnp.sqrt(variance)
    t = c - h / jnp.maximum(sigma, jnp.finfo(h.dtype).tiny)
    per_unit = variance * ((1.0 + c**2) * norm.sf(t) + (t - 2.0 * c) * norm.pdf(t)) + jnp.square(h) * norm.cdf(t)
    return jnp.sum(per_unit, -1) / jnp.sum(jnp.square(h), -1)


def sample_hidden(key: jax.Array, batch: int, m: int, k: int, low: float = 0.5, high: float = 1.5) -> jax.Array:
    """``batch`` k-sparse non-negative vectors in R^m: uniform random supports, values U[low, high].

    Bounded values keep ``||h||_inf <= (high / low) ||h|| / sqrt(k)``, within the theorem's
    ``O(sqrt(log k / k)) ||h||``.
    """
    if not 1 <= k <= m:
        raise InputError(f"The sparsity k must be in 1..{m} (the top layer's width), got {k}.")
    support_key, value_key = jax.random.split(key)
    # The k largest of m i.i.d. uniforms sit at a uniformly random k-subset (and top_k compiles
    # far faster than a permutation).
    _, support = lax.top_k(jax.random.uniform(support_key, (batch, m)), k)
    on = jnp.zeros((batch, m), bool).at[jnp.arange(batch)[:, None], support].set(True)
    values = jax.random.uniform(value_key, (batch, m), minval=low, maxval=high)
    return jnp.where(on, values, 0.0)


def random_weights(key: jax.Array, widths: Sequence[int]) -> Weights:
    """``W_1 .. W_L`` with i.i.d. N(0, 1) entries, ``W_l`` of shape ``(widths[l-1], widths[l])``."""
    keys = jax.random.split(key, len(widths) - 1)
    return tuple(jax.random.normal(kk, (n_in, n_out)) for kk, n_in, n_out in zip(keys, widths[:-1], widths[1:]))


def sample_layers(key: jax.Array | None, weights: Weights, h: jax.Array, rho: float) -> tuple[jax.Array, ...]:
    """Every layer of a batch sampled from the top layer ``h``: ``(h^(0) = x, h^(1), ..., h^(L) = h)``.

    ``key`` draws the sampling masks; it may be ``None`` when ``rho == 1``.
    """
    keys = jax.random.split(key, len(weights)) if key is not None else [None] * len(weights)
    layers = [h]
    for w, layer_key in zip(reversed(weights), reversed(keys)):
        below = jax.nn.relu(alpha(w.shape[0], rho) * layers[0] @ w.T)
        if rho < 1.0:
            below = jnp.where(jax.random.bernoulli(layer_key, rho, below.shape), below, 0.0)
        layers.insert(0, below)
    return tuple(layers)


def recover(
    weights: Weights,
    x: jax.Array,
    biases: Sequence[jax.Array | float] | None = None,
    *,
    c: jax.Array | float | None = None,
    relu: bool = True,
) -> tuple[jax.Array, ...]:
    """The feedforward estimates ``(h_hat^(1), ..., h_hat^(L))`` of a batch ``x``.

    Layer l's bias is ``biases[l-1]`` (a number, or one per example, shape ``(batch,)``), or, with
    ``c``, ``-c ||h_hat^(l-1)||``: c standard deviations of the noise of ``W_l^T h_hat^(l-1)``, whose
    off-support entries have standard deviation ``||h_hat^(l-1)||`` for N(0, 1) weights. That is
    the theorem's bias with the norm read off the layer's own input instead of an oracle, and it
    shrinks along with an input that lower thresholds have shrunk. Neither: no bias.
    ``relu=False`` gives the linear estimates ``W_l^T h_hat^(l-1) + b_l``.
    """
    if biases is not None and c is not None:
        raise InputError("Give recover either biases or c, not both.")
    estimates = []
    h = x
    for i, w in enumerate(weights):
        z = L.linear(L.Dense(w.shape[1]), w, h)
        if c is not None:
            z = z - c * jnp.linalg.norm(h, axis=-1, keepdims=True)
        elif biases is not None:
            z = z + jnp.reshape(biases[i], (-1, 1))
        h = jax.nn.relu(z) if relu else z
        estimates.append(h)
    return tuple(estimates)


def threshold_biases(norms: Sequence[jax.Array], weights: Weights, rho: float, c) -> tuple[jax.Array, ...]:
    """``b_l = -c ||h^(l)|| sqrt(2 / (rho n_{l-1}))`` from each layer's norm (``(batch,)`` each)."""
    return tuple(-c * norm * jnp.sqrt(2.0 / (rho * w.shape[0])) for norm, w in zip(norms, weights))


def relative_squared_error(h_hat: jax.Array, h: jax.Array) -> jax.Array:
    """``||h_hat - h||^2 / ||h||^2`` per example."""
    return jnp.sum(jnp.square(h_hat - h), -1) / jnp.sum(jnp.square(h), -1)


class Trials(NamedTuple):
    """Per-trial results of ``simulate``; axes (weight draw, hidden draw, [c,] layer).

    Attributes:
      nonzeros: number of nonzero units of the true ``h^(l)``.
      linear: relative squared error of the linear estimates (no ReLU, no bias).
      relu: relative squared error of ``relu(W^T x)`` (no bias).
      threshold: relative squared error with the theorem's bias from the true norms, per c.
      threshold_input_norm: the same with the bias read off each layer's input (``recover(c=...)``).
      zeros_recovered: whether every zero of ``h^(l)`` is estimated as zero (true norms), per c.
      predicted: ``predicted_error_for`` the true ``h^(l)``, per c (one step from an exact layer below).
    """

    nonzeros: jax.Array
    linear: jax.Array
    relu: jax.Array
    threshold: jax.Array
    threshold_input_norm: jax.Array
    zeros_recovered: jax.Array
    predicted: jax.Array


def trials_for_weights(key: jax.Array, weights: Weights, h: jax.Array, rho: float, cs: jax.Array) -> Trials:
    """Samples a batch from the top layers ``h`` with fixed weights and recovers it in every way ``Trials`` lists."""
    layers = sample_layers(key, weights, h, rho)
    x, truth = layers[0], layers[1:]

    def errors(estimates):
        return jnp.stack([relative_squared_error(e, t) for e, t in zip(estimates, truth)], -1)

    def with_oracle_bias(c):
        norms = tuple(jnp.linalg.norm(t, axis=-1) for t in truth)
        estimates = recover(weights, x, threshold_biases(norms, weights, rho, c))
        zeros = jnp.stack([jnp.all((t > 0) | (e == 0), -1) for e, t in zip(estimates, truth)], -1)
        predicted = jnp.stack([predicted_error_for(t, w.shape[0], rho, c) for t, w in zip(truth, weights)], -1)
        return errors(estimates), zeros, predicted

    threshold, zeros, predicted = jax.vmap(with_oracle_bias, out_axes=1)(cs)
    input_norm = jax.vmap(lambda c: errors(recover(weights, x, c=c)), out_axes=1)(cs)
    return Trials(
        nonzeros=jnp.stack([jnp.sum(t > 0, -1) for t in truth], -1),
        linear=errors(recover(weights, x, relu=False)),
        relu=errors(recover(weights, x)),
        threshold=threshold,
        threshold_input_norm=input_norm,
        zeros_recovered=zeros,
        predicted=predicted,
    )


@functools.partial(jax.jit, static_argnames=("widths", "k", "rho", "weight_draws", "hidden_draws"))
def simulate(
    key: jax.Array,
    widths: tuple[int, ...],
    k: int,
    rho: float,
    cs: jax.Array,
    *,
    weight_draws: int = 10,
    hidden_draws: int = 10,
) -> Trials:
    """``weight_draws x hidden_draws`` trials of the L-layer model with widths ``n_0 .. n_L``.

    Each weight draw is made inside a ``lax.map``, so memory holds one draw's weights (``4 sum
    n_{l-1} n_l`` bytes) and one batch of ``hidden_draws`` samples, whatever the number of trials.
    ``cs`` holds the bias multipliers to evaluate (e.g. ``jnp.array(DEFAULT_CS)``).
    """
    if len(widths) < 2:
        raise InputError(f"widths must list the input and at least one layer, got {widths}.")
    if not 0.0 < rho <= 1.0:
        raise InputError(f"The sampling keep-probability rho must be in (0, 1], got {rho}.")

    def one_draw(draw_key):
        weight_key, hidden_key, mask_key = jax.random.split(draw_key, 3)
        weights = random_weights(weight_key, widths)
        h = sample_hidden(hidden_key, hidden_draws, widths[-1], k)
        return trials_for_weights(mask_key, weights, h, rho, jnp.asarray(cs, jnp.float32))

    return lax.map(one_draw, jax.random.split(key, weight_draws))
