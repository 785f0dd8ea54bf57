"""The generative model: a ReLU net run backwards with transposed weights.

One reverse step of a layer with linear map ``A_l`` (paper, section 1, read as a net):

    h_{l-1} = relu(alpha_l * A_l^T unpool_l(h_l)) * Bernoulli(rho)

The ReLU is kept for hidden layers and is a setting for the input layer
(centred images are not non-negative), and

    alpha_l = c / (rho * fan_in_l * mean(W_l ** 2)),  c = 2 with ReLU, 1 without.

ReLU passes half of the signal (Stein's lemma: E[w relu(w h + xi)] = s^2 h / 2
for symmetric noise xi), hence c = 2; ``rho * fan_in`` terms survive the mask.
With this alpha, ``A_l`` applied to the generated layer gives back ``h_l`` on
its support in expectation, for random-like weights of any variance.

``reverse`` is this generator for any JAX function ``x -> h_l`` (a Flax
module's method, a ``Net``'s ``features``): the VJP of that function at the
real input with cotangent ``h_l``, each ReLU's rule swapped for the ReLU of
the backward signal (``transposition``). ``twins`` and ``generate`` apply it to
the built-in nets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from rev_nets import models, nets, transposition
from rev_nets.errors import InputError

Alpha = float | Sequence[float] | str | None
ALPHA_MODES = ("formula", "data")


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


def _check_settings(rho: float, key, smooth_sigma: float, alpha: Alpha, alpha_scale: float) -> None:
    if not 0.0 < rho <= 1.0:
        raise InputError(f"Sampling keep-probability rho must be in (0, 1], got {rho}.")
    if rho < 1.0 and key is None:
        raise InputError("Sampling (rho < 1) needs a PRNG key; pass key=jax.random.key(seed).")
    if smooth_sigma < 0:
        raise InputError(f"smooth_sigma must be >= 0 (0 turns smoothing off), got {smooth_sigma}.")
    if isinstance(alpha, str) and alpha not in ALPHA_MODES:
        raise InputError(
            f"alpha must be None (calibrated), 'formula', 'data', a number or one number per map, got {alpha!r}."
        )
    if not alpha_scale > 0:
        raise InputError(f"alpha_scale must be positive, got {alpha_scale}.")


def _map_alphas(alpha: Alpha, num_maps: int) -> Alpha:
    if alpha is None or isinstance(alpha, str):
        return alpha
    if isinstance(alpha, (int, float)) or (isinstance(alpha, jax.Array) and alpha.ndim == 0):
        return (alpha,) * num_maps
    if len(alpha) != num_maps:
        raise InputError(
            f"alpha has {len(alpha)} entries but {num_maps} linear maps lie between the input and the source layer; "
            "give one per map or a single number."
        )
    return tuple(alpha)


def _reverse(features, x, *, h, key, rho, alpha, alpha_scale, input_relu, use_switches, plain_vjp, smooth_sigma):
    _check_settings(rho, key, smooth_sigma, alpha, alpha_scale)
    graph = transposition.trace(features, x, plain_vjp)
    if h is not None and (h.shape != graph.out_shape or h.dtype != graph.out_dtype):
        raise InputError(
            f"h has shape {h.shape} and dtype {h.dtype} but features gives {graph.out_shape} {graph.out_dtype}; "
            "pass the source layer of this batch."
        )
    settings = transposition.Settings(
        key, rho, _map_alphas(alpha, graph.num_maps), alpha_scale, input_relu, use_switches
    )
    x_syn, alphas = transposition.run(graph, x, h, settings)
    if input_relu:
        x_syn = jax.nn.relu(x_syn)
    if smooth_sigma > 0:
        x_syn = gaussian_blur(x_syn, smooth_sigma)
    return x_syn.astype(x.dtype), alphas


def reverse(
    features: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    *,
    h: jax.Array | None = None,
    key: jax.Array | None = None,
    rho: float = 1.0,
    alpha: Alpha = None,
    alpha_scale: float = 1.0,
    input_relu: bool = False,
    smooth_sigma: float = 0.0,
    use_switches: bool = True,
    plain_vjp: Sequence[str] = (),
) -> jax.Array:
    """Synthetic twins of the batch ``x``: ``features`` run backwards from its output at ``x``.

    Args:
      features: any JAX function from a batch to the source hidden layer
        (``lambda x: model.apply(variables, x)``, a Flax NNX method, ...), made
        of linear maps, ReLUs, max or average pooling and structural ops.
      x: the real batch. Its forward values give the max-pooling switches; a
        batch of zeros with ``use_switches=False`` generates from ``h`` alone.
      h: the source layer to generate from (default: ``features(x)``).
      key: PRNG key of the sampling masks; needed only when ``rho < 1``.
      rho: keep-probability of the Bernoulli masks at each map's input (1 = off).
      alpha: ``None`` for each map's calibrated alpha, read from the traced
        weights (refused where its guarantee fails: a residual sum before the
        ReLU, a transposed convolution); ``"formula"`` for the same formula on
        every map, guarantee or not; ``"data"`` to fit each map's alpha on this batch (so that its
        round trip gives back its signal on the signal's support, on average;
        ``alphas`` returns the values, to freeze); a number for every map;
        or one number per linear map, input side first.
      alpha_scale: multiplies every alpha.
      input_relu: apply the ReLU to the generated input too.
      smooth_sigma: Gaussian blur (in pixels) of generated NHWC images; 0 = off.
      use_switches: reverse max pooling through the switches of ``x``'s forward
        pass; ``False`` copies each value over its window.
      plain_vjp: primitive names that take their plain VJP instead of being refused.

    Returns:
      A batch with ``x``'s shape and dtype. Pure: no retrace under ``jit``, and
      it works under ``vmap`` and with sharded inputs.
    """
    settings = {"h": h, "key": key, "rho": rho, "alpha": alpha, "alpha_scale": alpha_scale}
    settings |= {"input_relu": input_relu, "use_switches": use_switches, "plain_vjp": plain_vjp}
    return _reverse(features, x, smooth_sigma=smooth_sigma, **settings)[0]


def alphas(features: Callable[[jax.Array], jax.Array], x: jax.Array, **settings) -> tuple[jax.Array, ...]:
    """The alpha of each linear map (input side first) that ``reverse(features, x, **settings)`` uses.

    With ``alpha="data"``, the values fitted on ``x``: freeze them (pass them
    back as ``alpha``) so that the fit does not cost every call. The sampling
    key defaults to a fixed one: calibrated alphas do not depend on it.
    """
    defaults = {"h": None, "key": jax.random.key(0), "rho": 1.0, "alpha": None, "alpha_scale": 1.0, "input_relu": False}
    defaults |= {"use_switches": True, "plain_vjp": (), "smooth_sigma": 0.0}
    return _reverse(features, x, **(defaults | settings))[1]


# -------------------------------------------------------------- models --


def _check_layer(model: models.Model, layer: int) -> None:
    if not 1 <= layer <= model.depth:
        raise InputError(f"Generator source layer must be in 1..{model.depth} for this model, got {layer}.")


def twins(model: models.Model, params, x: jax.Array, layer: int, **settings) -> jax.Array:
    """Synthetic twins of ``x`` from source layer ``layer`` (1-based): ``reverse`` of ``model.features``.

    ``settings`` are ``reverse``'s (``h`` overrides the source layer, e.g. the
    one a forward pass with dropout recorded). A ``Net`` has one linear map per
    hidden layer, so a per-map ``alpha`` holds one number per layer 1..``layer``.
    """
    _check_layer(model, layer)
    return reverse(lambda v: model.features(params, v, layer), x, **settings)


def generate(net: nets.Net, params: nets.Params, h: jax.Array, layer: int, **settings) -> jax.Array:
    """Synthetic inputs from ``h`` at hidden layer ``layer`` with no real input: pooling reverses by copying.

    The net is linearised at a batch of zeros; only its pooling switches would
    depend on that point, and the copy rule does not read them.
    """
    _check_layer(net, layer)
    if settings.get("use_switches"):
        raise InputError("generate has no real input, so no pooling switches: drop use_switches (it copies).")
    settings.pop("use_switches", None)
    shape = nets.layer_shapes(net)[layer]
    if tuple(h.shape[1:]) != shape:
        raise InputError(f"h has per-example shape {tuple(h.shape[1:])} but layer {layer} of this net has {shape}.")
    zeros = jnp.zeros((h.shape[0], *net.input_shape), h.dtype)
    return twins(net, params, zeros, layer, h=h, use_switches=False, **settings)


def twins_by_layer(model: models.Model, params, x: jax.Array, **settings) -> dict[str, jax.Array]:
    """``x`` and its synthetic twins ``G(h_l)`` from every hidden layer ``l``, for image grids.

    ``settings`` are ``twins``' keyword settings, shared by every layer.
    """
    rows = {f"from h{l}": twins(model, params, x, l, **settings) for l in range(1, model.depth + 1)}
    return {"real": x} | rows
