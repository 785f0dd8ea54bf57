"""Flax NNX models for ``--model=rev_nets.nnx_zoo:<factory>``: each a plain ReLU net the generator can reverse."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx


class ResidualBlock(nnx.Module):
    """``relu(h + conv(relu(conv(h))))``: two 3x3 convolutions and an identity skip."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.first = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.second = nnx.Conv(channels, channels, (3, 3), rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return nnx.relu(h + self.second(nnx.relu(self.first(h))))


class ResidualCNN(nnx.Module):
    """Stages of ``conv -> ReLU -> residual block -> 2x2 max pool``, then dropout and a dense head.

    Source layer ``l`` is stage ``l``'s pooled output. No BatchNorm: the model
    holds only parameters (and its dropout's RNG stream), and its generator
    needs no batch statistics.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        num_classes: int = 10,
        input_shape: Sequence[int] = (32, 32, 3),
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        height, width, c_in = input_shape
        self.stems = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip((c_in, *channels), channels)])
        self.blocks = nnx.List([ResidualBlock(c, rngs=rngs) for c in channels])
        scale = 2 ** len(channels)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(height // scale * width // scale * channels[-1], num_classes, rngs=rngs)
        self.depth = len(channels)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def features(self, x: jax.Array, layer: int) -> jax.Array:
        h = x
        for stem, block in zip(self.stems[:layer], self.blocks[:layer]):
            h = nnx.max_pool(block(nnx.relu(stem(h))), (2, 2), strides=(2, 2))
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.features(x, self.depth)
        return self.head(self.dropout(h.reshape(h.shape[0], -1)))


def residual_cnn(
    *, rngs: nnx.Rngs, channels: Sequence[int] = (32, 64, 128), num_classes: int = 10, dropout: float = 0.0
) -> ResidualCNN:
    """The CIFAR residual CNN (32x32x3 inputs); ``channels`` per stage, ``dropout`` before the head."""
    return ResidualCNN(tuple(channels), num_classes, (32, 32, 3), dropout, rngs=rngs)
