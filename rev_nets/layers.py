"""Layers of a ReLU net, `h_out = pool(relu(A h_in + b))`.

A layer description is static (a frozen dataclass, hashable, usable as a jit
static argument); its parameters are a plain dict ``{"w": ..., "b": ...}``.
All functions act on a batch (leading axis), so ``jax.vmap`` over a further
leading axis and sharding along the batch axis both work.

The generator reverses these layers from their traced computation
(``generator.reverse``), so a layer never has a hand-written transpose: any
stride, padding or implementation of the forward map gets its exact adjoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rev_nets.errors import InputError

Pool = Literal["max", "avg"] | None
Padding = Literal["SAME", "VALID"] | tuple[tuple[int, int], tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class Dense:
    """A dense layer; its input is flattened first, so it can follow a conv."""

    features: int
    pool: Pool = None  # Dense layers never pool; the field keeps one protocol.

    def __post_init__(self):
        if self.features < 1:
            raise InputError(f"Dense features must be positive, got {self.features}; pass e.g. features=1024.")
        if self.pool is not None:
            raise InputError("Dense layers cannot pool; use pool=None, or pool in a Conv layer.")


CONV_IMPLS = ("auto", "matmul", "lax")  # a convolution's formulations: "auto" picks by device (auto_conv_impl)


@dataclasses.dataclass(frozen=True)
class Conv:
    """A 2-D convolution on NHWC inputs, optionally followed by 2-D pooling.

    Pooling windows are non-overlapping (``pool_size`` x ``pool_size``, stride
    equal to the window), which is what makes unpooling an exact right inverse.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "SAME"
    pool: Pool = None
    pool_size: int = 2
    impl: Literal["auto", "matmul", "lax"] = "auto"

    def __post_init__(self):
        if self.features < 1:
            raise InputError(f"Conv features must be positive, got {self.features}; pass e.g. features=64.")
        if self.pool not in ("max", "avg", None):
            raise InputError(f"Conv pool must be 'max', 'avg' or None, got {self.pool!r}.")
        if self.pool_size < 1:
            raise InputError(f"Conv pool_size must be positive, got {self.pool_size}.")
        if self.impl not in CONV_IMPLS:
            raise InputError(f"Conv impl must be 'auto', 'matmul' or 'lax', got {self.impl!r}.")


Layer = Dense | Conv


class Hidden(NamedTuple):
    """One hidden layer's output as recorded by the forward pass.

    ``h`` is the layer's output after pooling (before any dropout);
    ``switches`` are the max-pooling winners (index within each window, int32,
    same shape as ``h``) or ``None`` for layers that do not max-pool.
    """

    h: jax.Array
    switches: jax.Array | None


# ----------------------------------------------------------------- shapes --


def pre_pool_shape(layer: Layer, in_shape: Sequence[int]) -> tuple[int, ...]:
    """Per-example shape of ``A h`` for an input of per-example ``in_shape``."""
    if isinstance(layer, Dense):
        return (layer.features,)
    if len(in_shape) != 3:
        raise InputError(
            f"A Conv layer needs (height, width, channels) inputs, got per-example shape {tuple(in_shape)}."
        )
    out_hw = lax.conv_general_shape_tuple(
        (1, in_shape[2], in_shape[0], in_shape[1]),
        (layer.features, in_shape[2], *layer.kernel_size),
        layer.strides,
        _lax_padding(layer, in_shape),
        ("NCHW", "OIHW", "NCHW"),
    )[2:]
    return (*(int(d) for d in out_hw), layer.features)


def out_shape(layer: Layer, in_shape: Sequence[int]) -> tuple[int, ...]:
    """Per-example shape of the layer's output (after pooling)."""
    shape = pre_pool_shape(layer, in_shape)
    if layer.pool is None:
        return shape
    height, width, channels = shape
    p = layer.pool_size
    if height % p or width % p:
        raise InputError(
            f"{layer.pool} pooling of size {p} needs spatial sizes divisible by {p}, got {height}x{width}; "
            "change the input size, padding or pool_size."
        )
    return (height // p, width // p, channels)


def fan_in(layer: Layer, in_shape: Sequence[int]) -> int:
    """Number of terms in one output unit's sum: the input size, or kh*kw*c_in."""
    if isinstance(layer, Dense):
        return math.prod(in_shape)
    return layer.kernel_size[0] * layer.kernel_size[1] * in_shape[-1]


def weight_shape(layer: Layer, in_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of ``w``: (fan_in, features) dense, (kh, kw, c_in, features) conv."""
    if isinstance(layer, Dense):
        return (math.prod(in_shape), layer.features)
    return (*layer.kernel_size, in_shape[-1], layer.features)


def _lax_padding(layer: Conv, in_shape: Sequence[int]):
    if isinstance(layer.padding, str):
        return lax.padtype_to_pads(in_shape[:2], layer.kernel_size, layer.strides, layer.padding)
    return layer.padding


# ------------------------------------------------------------------- init --


def init(key: jax.Array, layer: Layer, in_shape: Sequence[int]) -> dict[str, jax.Array]:
    """He-normal weights (variance 2 / fan_in, i.i.d. Gaussian) and zero bias."""
    std = math.sqrt(2.0 / fan_in(layer, in_shape))
    w = std * jax.random.normal(key, weight_shape(layer, in_shape), jnp.float32)
    return {"w": w, "b": jnp.zeros((layer.features,), jnp.float32)}


# ---------------------------------------------------------------- forward --


def linear(layer: Layer, w: jax.Array, h: jax.Array) -> jax.Array:
    """The layer's linear map ``A h`` on a batch (no bias): what gets transposed."""
    if isinstance(layer, Dense):
        return h.reshape(h.shape[0], -1) @ w
    if conv_impl(layer) == "lax":
        return lax.conv_general_dilated(
            h,
            w,
            window_strides=layer.strides,
            padding=_lax_padding(layer, h.shape[1:]),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    return _conv_as_matmul(layer, w, h)


def conv_impl(layer: Conv) -> str:
    """The convolution's formulation: ``impl``, or for "auto" the faster one measured here (``auto_conv_impl``)."""
    return auto_conv_impl() if layer.impl == "auto" else layer.impl


def auto_conv_impl() -> str:
    """The faster convolution formulation for the current devices.

    On a single CPU device one matmul over shifted slices beats XLA's
    convolution (which runs on one core). Split into several CPU devices
    (``jax_num_cpu_devices``), each device's convolution gets its own core and
    ``lax.conv_general_dilated`` wins, as it does on GPU (cuDNN) and TPU.
    """
    return "matmul" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "lax"


def _conv_as_matmul(layer: Conv, w: jax.Array, h: jax.Array) -> jax.Array:
    return conv_as_matmul(h, w, layer.strides, _lax_padding(layer, h.shape[1:]))


def conv_as_matmul(h: jax.Array, w: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """An NHWC x HWIO convolution (``padding`` "SAME", "VALID" or pairs) as one matmul over the kh*kw shifted
    slices stacked on channels.

    Faster than ``lax.conv_general_dilated`` on CPU (XLA's CPU convolution
    uses one core; a matmul uses all of them). Exact: the same sums, and the
    generator reverses it through the VJPs of its pad, slices and matmul.
    """
    kh, kw = w.shape[:2]
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(h.shape[1:3], (kh, kw), strides, padding)
    (top, bottom), (left, right) = padding
    padded = jnp.pad(h, ((0, 0), (top, bottom), (left, right), (0, 0)))
    sh, sw = strides
    out_h = (padded.shape[1] - kh) // sh + 1
    out_w = (padded.shape[2] - kw) // sw + 1
    slices = [
        padded[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = jnp.concatenate(slices, axis=-1) if len(slices) > 1 else slices[0]
    return patches @ w.reshape(-1, w.shape[-1])


def nnx_conv_function(impl: str):
    """``nnx.Conv``'s ``conv_general_dilated`` for ``impl`` ("lax", "matmul", or "auto": ``auto_conv_impl``'s
    choice when traced), so an NNX net's convolutions take the formulation this project's nets take; dilated or
    grouped convolutions stay ``lax``'s."""

    def convolve(lhs, rhs, window_strides, padding, *, lhs_dilation, rhs_dilation, dimension_numbers, **rest):
        undilated = set(lhs_dilation or (1,)) | set(rhs_dilation or (1,)) == {1}
        plain = undilated and rest.get("feature_group_count", 1) == 1 and lhs.ndim == 4
        if plain and (auto_conv_impl() if impl == "auto" else impl) == "matmul":
            return conv_as_matmul(lhs, rhs, window_strides, padding)
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            **rest,
        )

    return convolve


def max_pool(h: jax.Array, size: int) -> jax.Array:
    """Non-overlapping ``size x size`` max pooling of NHWC ``h`` (a partial last window dropped, like a "VALID"
    ``nnx.max_pool``), as a reshape and a max.

    The same values as ``lax.reduce_window``; its derivative is an elementwise
    mask, where the window form's derivative on XLA's CPU backend builds four
    int32 index arrays the size of the input (on the airbench net's 31x31
    layer, a quarter of the train step). The generator reverses either form
    through the same switches (each window's first winner).
    """
    b, height, width, c = h.shape
    rows, cols = height // size, width // size
    h = h[:, : rows * size, : cols * size]
    return h.reshape(b, rows, size, cols, size, c).max(axis=(2, 4))


def _windows(layer: Conv, z: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/p, W/p, C, p*p): each pooling window on the last axis."""
    b, height, width, c = z.shape
    p = layer.pool_size
    z = z.reshape(b, height // p, p, width // p, p, c)
    return z.transpose(0, 1, 3, 5, 2, 4).reshape(b, height // p, width // p, c, p * p)


def pool(layer: Layer, z: jax.Array) -> Hidden:
    """Pools ``z`` and returns it with the max-pooling switches (if any)."""
    if layer.pool is None:
        return Hidden(z, None)
    windows = _windows(layer, z)
    if layer.pool == "avg":
        return Hidden(windows.mean(-1), None)
    switches = jnp.argmax(windows, axis=-1).astype(jnp.int32)
    return Hidden(windows.max(-1), switches)


def apply(layer: Layer, params: dict[str, jax.Array], h: jax.Array) -> Hidden:
    """``pool(relu(A h + b))`` with the pooling switches."""
    z = jax.nn.relu(linear(layer, params["w"], h) + params["b"])
    return pool(layer, z)
