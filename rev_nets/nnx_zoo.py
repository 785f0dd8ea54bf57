"""Flax NNX models for ``--model=rev_nets.nnx_zoo:<factory>``: ReLU nets the generator can reverse."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

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
            h = nnx.max_pool(block(nnx.relu(_conv_norm(stem, norm, h))), (2, 2), strides=(2, 2))
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
