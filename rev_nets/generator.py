"""The generative model: the net run backwards with transposed weights.

One reverse step of hidden layer ``l`` (paper, section 1, read as a net):

    h_{l-1} = relu(alpha_l * A_l^T unpool_l(h_l)) * Bernoulli(rho)

where ``A_l`` is layer ``l``'s linear map (its adjoint comes from
``jax.linear_transpose``), the ReLU is kept for hidden layers and is a
setting for the input layer (centred images are not non-negative), and

    alpha_l = c / (rho * fan_in_l * mean(W_l ** 2)),  c = 2 with ReLU, 1 without.

ReLU passes half of the signal (Stein's lemma: E[w relu(w h + xi)] = s^2 h / 2
for symmetric noise xi), hence c = 2; ``rho * fan_in`` terms survive the mask.
With this alpha, ``A_l`` applied to the generated layer gives back ``h_l`` on
its support in expectation, for random-like weights of any variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from rev_nets import layers as L
from rev_nets import nets

Alpha = float | Sequence[float] | None


def calibrated_alpha(layer: L.Layer, w: jax.Array, in_shape: Sequence[int], rho: float, relu: bool) -> jax.Array:
    """``c / (rho * fan_in * mean(w^2))``: undoes ReLU halving, sampling and weight scale."""
    c = 2.0 if relu else 1.0
    return c / (rho * L.fan_in(layer, in_shape) * jnp.mean(jnp.square(w)))


def reverse_step(
    layer: L.Layer,
    w: jax.Array,
    h: jax.Array,
    in_shape: Sequence[int],
    *,
    switches: jax.Array | None,
    alpha: jax.Array | float,
    relu: bool,
    rho: float,
    key: jax.Array | None,
) -> jax.Array:
    """One layer backwards: unpool, ``A^T``, scale, optional ReLU, Bernoulli(rho) mask."""
    x = alpha * L.adjoint(layer, w, L.unpool(layer, h, switches), in_shape)
    if relu:
        x = jax.nn.relu(x)
    if rho < 1.0:
        x = jnp.where(jax.random.bernoulli(key, rho, x.shape), x, 0.0)
    return x


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian smoothing of NHWC images, reflecting at the borders."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = jnp.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    kernel = kernel / kernel.sum()
    channels = x.shape[-1]
    x = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    for kernel_shape in ((2 * radius + 1, 1, 1, channels), (1, 2 * radius + 1, 1, channels)):
        x = lax.conv_general_dilated(
            x,
            jnp.broadcast_to(kernel.reshape(kernel_shape[:2] + (1, 1)), kernel_shape),
            window_strides=(1, 1),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
        )
    return x


def _layer_alpha(alpha: Alpha, depth: int, layer: int) -> float | None:
    if alpha is None or isinstance(alpha, (int, float)):
        return alpha
    if len(alpha) != depth:
        raise ValueError(
            f"alpha has {len(alpha)} entries but the net has {depth} hidden layers; give one per layer or a single number."
        )
    return alpha[layer - 1]


def _check_layer(net: nets.Net, layer: int) -> None:
    if not 1 <= layer <= net.depth:
        raise ValueError(f"Generator source layer must be in 1..{net.depth} for this net, got {layer}.")


def _check_settings(net: nets.Net, layer: int, rho: float, key, switches, smooth_sigma: float) -> None:
    _check_layer(net, layer)
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"Sampling keep-probability rho must be in (0, 1], got {rho}.")
    if rho < 1.0 and key is None:
        raise ValueError("Sampling (rho < 1) needs a PRNG key; pass key=jax.random.key(seed).")
    if switches is not None and len(switches) != layer:
        raise ValueError(f"switches must hold one entry per layer 1..{layer}, got {len(switches)}.")
    if smooth_sigma < 0:
        raise ValueError(f"smooth_sigma must be >= 0 (0 turns smoothing off), got {smooth_sigma}.")


def generate(
    net: nets.Net,
    params: nets.Params,
    h: jax.Array,
    layer: int,
    *,
    key: jax.Array | None = None,
    switches: Sequence[jax.Array | None] | None = None,
    rho: float = 1.0,
    alpha: Alpha = None,
    alpha_scale: float = 1.0,
    input_relu: bool = False,
    smooth_sigma: float = 0.0,
) -> jax.Array:
    """Synthetic inputs from hidden layer ``layer`` (1-based) of a batch.

    Args:
      net, params: the net whose layers ``layer..1`` are run backwards.
      h: the batch at hidden layer ``layer``, shape ``(B, *layer_shapes(net)[layer])``.
      layer: the source layer, 1..net.depth.
      key: PRNG key for the sampling masks; needed only when ``rho < 1``.
      switches: max-pooling switches for layers ``1..layer`` (``None`` entries
        where a layer does not max-pool), as recorded by ``nets.forward``;
        ``None`` copies each value over its window instead.
      rho: keep-probability of the Bernoulli sampling mask (1 = no sampling).
      alpha: ``None`` for the calibrated alpha of each layer, a number for all
        layers, or one number per hidden layer.
      alpha_scale: multiplies every layer's alpha; since ReLU commutes with
        positive scaling, the output scales by ``alpha_scale ** layer``.
      input_relu: apply the ReLU when generating the input layer too.
      smooth_sigma: Gaussian blur (in pixels) of the generated images; 0 = off.

    Returns:
      A batch shaped like the net's input, in ``h``'s dtype.
    """
    _check_settings(net, layer, rho, key, switches, smooth_sigma)
    shapes = nets.layer_shapes(net)
    if tuple(h.shape[1:]) != shapes[layer]:
        raise ValueError(
            f"h has per-example shape {tuple(h.shape[1:])} but layer {layer} of this net has {shapes[layer]}."
        )
    keys = jax.random.split(key, layer) if key is not None else [None] * layer
    x = h
    for l in range(layer, 0, -1):
        spec, w = net.layers[l - 1], params["hidden"][l - 1]["w"]
        relu = l > 1 or input_relu
        layer_alpha = _layer_alpha(alpha, net.depth, l)
        if layer_alpha is None:
            layer_alpha = calibrated_alpha(spec, w, shapes[l - 1], rho, relu)
        layer_alpha = alpha_scale * layer_alpha
        x = reverse_step(
            spec,
            w,
            x,
            shapes[l - 1],
            switches=None if switches is None else switches[l - 1],
            alpha=layer_alpha,
            relu=relu,
            rho=rho,
            key=keys[l - 1],
        )
    if smooth_sigma > 0:
        x = gaussian_blur(x, smooth_sigma)
    return x


def generate_from(
    net: nets.Net,
    params: nets.Params,
    hiddens: Sequence[L.Hidden],
    layer: int,
    *,
    use_switches: bool = True,
    **settings,
) -> jax.Array:
    """``generate`` from the hiddens of ``nets.forward``, reusing its switches."""
    _check_layer(net, layer)
    switches = tuple(hd.switches for hd in hiddens[:layer]) if use_switches else None
    return generate(net, params, hiddens[layer - 1].h, layer, switches=switches, **settings)


def twins_by_layer(net: nets.Net, params: nets.Params, x: jax.Array, **settings) -> dict[str, jax.Array]:
    """``x`` and its synthetic twins ``G(h_l)`` from every hidden layer ``l``, for image grids.

    ``settings`` are ``generate``'s keyword settings, shared by every layer.
    """
    _, hiddens = nets.forward(net, params, x)
    twins = {f"from h{l}": generate_from(net, params, hiddens, l, **settings) for l in range(1, net.depth + 1)}
    return {"real": x} | twins
