"""Flax NNX models for ``--model=rev_nets.nnx_zoo:<factory>``: ReLU nets the generator can reverse.

``residual_cnn``: stages of convolutions with identity skips, BatchNorm optional.
``airbench_relu``: airbench94's CIFAR-10 net (Jordan, 2024) with ReLU for GELU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rev_nets import layers, models
from rev_nets.errors import SettingError

BATCH_NORM_MOMENTUM = 0.9  # Running averages over about the last 10 steps: a short run's evaluation still fits.


def _norm(channels: int, batch_norm: bool, rngs: nnx.Rngs) -> nnx.BatchNorm | None:
    return nnx.BatchNorm(channels, momentum=BATCH_NORM_MOMENTUM, rngs=rngs) if batch_norm else None


def _conv_norm(conv: nnx.Conv, norm: nnx.BatchNorm | None, h: jax.Array) -> jax.Array:
    """``conv`` then, if there is one, BatchNorm (training mode: the batch's statistics; else the running ones)."""
    h = conv(h)
    return h if norm is None else norm(h)


class ResidualBlock(nnx.Module):
    """``relu(h + conv(relu(conv(h))))``: two 3x3 convolutions (each followed by BatchNorm if asked) and a skip."""

    def __init__(self, channels: int, *, batch_norm: bool = False, rngs: nnx.Rngs):
        self.first = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.second = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.first_norm = _norm(channels, batch_norm, rngs)
        self.second_norm = _norm(channels, batch_norm, rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        inner = nnx.relu(_conv_norm(self.first, self.first_norm, h))
        return nnx.relu(h + _conv_norm(self.second, self.second_norm, inner))


class ResidualCNN(nnx.Module):
    """Stages of ``conv -> [BatchNorm] -> ReLU -> residual block -> 2x2 max pool``, then dropout and a dense head.

    Source layer ``l`` is stage ``l``'s pooled output. With ``batch_norm``
    every convolution is followed by BatchNorm: training carries the running
    statistics beside the params, and the generator runs each BatchNorm
    backwards as its per-channel scale at the statistics the forward used.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        num_classes: int = 10,
        input_shape: Sequence[int] = (32, 32, 3),
        dropout: float = 0.0,
        batch_norm: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        height, width, c_in = input_shape
        self.stems = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip((c_in, *channels), channels)])
        self.stem_norms = nnx.List([_norm(c, batch_norm, rngs) for c in channels])
        self.blocks = nnx.List([ResidualBlock(c, batch_norm=batch_norm, rngs=rngs) for c in channels])
        scale = 2 ** len(channels)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(height // scale * width // scale * channels[-1], num_classes, rngs=rngs)
        self.depth = len(channels)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def features(self, x: jax.Array, layer: int) -> jax.Array:
        h = x
        for stem, norm, block in zip(self.stems[:layer], self.stem_norms[:layer], self.blocks[:layer]):
            h = layers.max_pool(block(nnx.relu(_conv_norm(stem, norm, h))), 2)
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.features(x, self.depth)
        return self.head(self.dropout(h.reshape(h.shape[0], -1)))


def residual_cnn(
    *,
    rngs: nnx.Rngs,
    channels: Sequence[int] = (32, 64, 128),
    num_classes: int = 10,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> ResidualCNN:
    """The CIFAR residual CNN (32x32x3 inputs); ``channels`` per stage, ``dropout`` before the head, and
    ``batch_norm`` after every convolution."""
    return ResidualCNN(tuple(channels), num_classes, (32, 32, 3), dropout, batch_norm, rngs=rngs)


def patch_whitening(images: jax.Array, size: int, eps: float) -> jax.Array:
    """An HWIO ``size x size`` filter bank that whitens the images' patches: each eigenvector of the patch
    covariance (largest first) over the square root of its eigenvalue plus ``eps``, then their negatives, so that
    a ReLU after it passes either sign."""
    height, width, channels = images.shape[1:]
    rows, cols = height - size + 1, width - size + 1
    patches = jnp.stack(
        [images[:, i : i + rows, j : j + cols, :] for i in range(size) for j in range(size)], axis=-2
    ).reshape(-1, size * size * channels)
    covariance = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)
    scaled = (eigenvectors / jnp.sqrt(eigenvalues + eps))[:, ::-1]
    return jnp.concatenate([scaled, -scaled], axis=1).reshape(size, size, channels, -1)


def dirac_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Flax's default (LeCun normal) HWIO kernel with its first ``min(in, out)`` filters made identities (a 1 at
    the centre tap of their own channel): each convolution starts by passing its input on."""
    kernel = nnx.initializers.lecun_normal()(key, shape, dtype)
    height, width, c_in, c_out = shape
    identities = min(c_in, c_out)
    centre = (
        jnp.zeros((height, width, c_in, identities), dtype)
        .at[height // 2, width // 2]
        .set(jnp.eye(c_in, identities, dtype=dtype))
    )
    return kernel.at[..., :identities].set(centre)


class Whitening(nnx.Module):
    """A ``size x size`` valid convolution whose filters are fitted to the training images (``prepare``) and then
    held (``models.Constant``), plus a trained bias: linear, so the generator reverses it like any convolution."""

    def __init__(
        self,
        eps: float,
        channels: int = 3,
        size: int = 2,
        dtype=jnp.float32,
        conv_impl: str = "auto",
        *,
        rngs: nnx.Rngs,
    ):
        width = 2 * channels * size * size
        self.kernel = models.Constant(jnp.zeros((size, size, channels, width)))
        self.bias = nnx.Param(jnp.zeros((width,)))
        self.eps, self.size, self.dtype, self.convolve = eps, size, dtype, layers.nnx_conv_function(conv_impl)

    def prepare(self, images: jax.Array) -> None:
        self.kernel[...] = patch_whitening(images, self.size, self.eps)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = (a.astype(self.dtype) for a in (x, self.kernel[...], self.bias[...]))
        y = self.convolve(
            x, kernel, (1, 1), "VALID", lhs_dilation=None, rhs_dilation=None, dimension_numbers=CONV_LAYOUT
        )
        return y + bias


CONV_LAYOUT = ("NHWC", "HWIO", "NHWC")


class ConvGroup(nnx.Module):
    """``conv -> 2x2 max pool -> BatchNorm -> activation -> conv -> BatchNorm -> activation``: bias-free
    convolutions (identity-initialised by ``dirac_init`` if ``identity_init``), BatchNorm with a shift and, if
    ``scale``, a scale; both compute in ``dtype``, their params and statistics stay float32."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        momentum: float,
        epsilon: float,
        scale: bool,
        identity_init: bool,
        dtype,
        conv_impl: str,
        activation: Callable[[jax.Array], jax.Array] = nnx.relu,
        rngs: nnx.Rngs,
    ):
        convolve = layers.nnx_conv_function(conv_impl)
        init = dirac_init if identity_init else nnx.initializers.lecun_normal()
        conv = lambda a, b: nnx.Conv(
            a, b, (3, 3), use_bias=False, kernel_init=init, dtype=dtype, conv_general_dilated=convolve, rngs=rngs
        )
        norm = lambda: nnx.BatchNorm(c_out, use_scale=scale, momentum=momentum, epsilon=epsilon, dtype=dtype, rngs=rngs)
        self.first, self.first_norm = conv(c_in, c_out), norm()
        self.second, self.second_norm = conv(c_out, c_out), norm()
        self.activation = activation

    def __call__(self, h: jax.Array) -> jax.Array:
        h = self.activation(self.first_norm(layers.max_pool(self.first(h), 2)))
        return self.activation(self.second_norm(self.second(h)))


class AirbenchReLU(nnx.Module):
    """airbench94's CIFAR-10 net with ReLU for GELU: an optional frozen 2x2 patch-whitening convolution and ReLU,
    three ``ConvGroup``s, a 3x3 max pool and a bias-free linear head times a fixed ``scale``. Its convolutions
    and BatchNorm compute in ``compute_dtype`` (float32 params and statistics either way); the head in float32.
    ``activation`` replaces ReLU everywhere (GELU, to measure what the swap costs).

    Source layer ``l`` is group ``l``'s output (32x32 inputs: 15, 7 and 3 pixels wide).
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 256, 256),
        num_classes: int = 10,
        whiten: bool = True,
        whitening_eps: float = 5e-4,
        identity_init: bool = True,
        batch_norm_scale: bool = False,
        batch_norm_momentum: float = 0.6,
        batch_norm_epsilon: float = 1e-12,
        scale: float = 1 / 9,
        compute_dtype=jnp.float32,
        conv_impl: str = "auto",
        activation: Callable[[jax.Array], jax.Array] = nnx.relu,
        *,
        rngs: nnx.Rngs,
    ):
        self.whitening = (
            Whitening(whitening_eps, dtype=compute_dtype, conv_impl=conv_impl, rngs=rngs) if whiten else None
        )
        self.activation = activation
        c_in = 24 if whiten else 3
        groups = []
        for width in widths:
            groups.append(
                ConvGroup(
                    c_in,
                    width,
                    momentum=batch_norm_momentum,
                    epsilon=batch_norm_epsilon,
                    scale=batch_norm_scale,
                    identity_init=identity_init,
                    dtype=compute_dtype,
                    conv_impl=conv_impl,
                    activation=activation,
                    rngs=rngs,
                )
            )
            c_in = width
        self.groups = nnx.List(groups)
        self.head = nnx.Linear(widths[-1], num_classes, use_bias=False, rngs=rngs)
        self.scale = scale
        self.depth, self.input_shape, self.num_classes = len(widths), (32, 32, 3), num_classes

    def prepare(self, images: jax.Array) -> None:
        if self.whitening is not None:
            self.whitening.prepare(images)

    def features(self, x: jax.Array, layer: int) -> jax.Array:
        h = x if self.whitening is None else self.activation(self.whitening(x))
        for group in self.groups[:layer]:
            h = group(h)
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.max_pool(self.features(x, self.depth), 3)
        return self.head(h.reshape(h.shape[0], -1).astype(jnp.float32)) * self.scale


def airbench_relu(
    *,
    rngs: nnx.Rngs,
    widths: Sequence[int] = (64, 256, 256),
    num_classes: int = 10,
    whiten: bool = True,
    whitening_eps: float = 5e-4,
    identity_init: bool = True,
    batch_norm_scale: bool = False,
    batch_norm_momentum: float = 0.6,
    batch_norm_epsilon: float = 1e-12,
    compute_dtype: str = "float32",
    conv_impl: str = "auto",
    activation: str = "relu",
) -> AirbenchReLU:
    """The airbench94-like ReLU net for CIFAR (32x32x3): ``widths`` per group, the whitening convolution if
    ``whiten`` (``whitening_eps`` added to the patch covariance's eigenvalues before they divide), convolutions
    identity-initialised if ``identity_init`` (else LeCun normal), BatchNorm with a learned scale only if
    ``batch_norm_scale``, running averages at ``batch_norm_momentum`` and ``batch_norm_epsilon`` in the variance
    (airbench94's: 5e-4, identities, no scale, 0.6, 1e-12), convolutions and
    BatchNorm computed in ``compute_dtype`` ("float32" or "bfloat16": mixed precision, float32 params, statistics,
    head and loss), convolutions as ``conv_impl`` says (``layers.Conv.impl``'s choices), and ``activation``
    "relu", or airbench94's "gelu" (exact, erf-based, as PyTorch's default) to measure the swap: the generator
    reverses GELU only with ``plain_vjp=GELU_PRIMITIVES``, its Jacobian-transpose in place of ReLU's switches."""
    if len(widths) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise SettingError("widths", f"must be three whole numbers >= 1 (one per group), got {list(widths)}.")
    if not 0 <= batch_norm_momentum < 1:
        raise SettingError("batch_norm_momentum", f"must be in [0, 1), got {batch_norm_momentum}.")
    for name, eps in (("whitening_eps", whitening_eps), ("batch_norm_epsilon", batch_norm_epsilon)):
        if not eps > 0:
            raise SettingError(name, f"must be > 0 (it keeps a division by a variance finite), got {eps}.")
    if compute_dtype not in COMPUTE_DTYPES:
        raise SettingError("compute_dtype", f"must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}.")
    if conv_impl not in layers.CONV_IMPLS:
        raise SettingError("conv_impl", f"must be one of {', '.join(layers.CONV_IMPLS)}, got {conv_impl!r}.")
    if activation not in ACTIVATIONS:
        raise SettingError("activation", f"must be one of {', '.join(ACTIVATIONS)}, got {activation!r}.")
    return AirbenchReLU(
        tuple(widths),
        num_classes,
        whiten,
        whitening_eps,
        identity_init,
        batch_norm_scale,
        batch_norm_momentum,
        batch_norm_epsilon,
        compute_dtype=COMPUTE_DTYPES[compute_dtype],
        conv_impl=conv_impl,
        activation=ACTIVATIONS[activation],
        rngs=rngs,
    )


ACTIVATIONS = {"relu": nnx.relu, "gelu": functools.partial(jax.nn.gelu, approximate=False)}
GELU_PRIMITIVES = ("erfc", "mul")  # What exact GELU traces to beyond linear maps: x * erfc(-x / sqrt(2)) / 2.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
