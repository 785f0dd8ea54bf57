"""A researcher's own ResNet, in plain Flax NNX with nothing from rev_nets: the CIFAR ResNet of He et al. (2016),
basic blocks with BatchNorm after every convolution, stride-2 convolutions and projection shortcuts between
stages, global average pooling. ``resnet()`` is ResNet-20.

rev_nets trains it with SHADOW through ``--model``, this folder on PYTHONPATH (a residual sum before a ReLU has
no calibrated alpha, hence ``--alpha=formula``)::

    PYTHONPATH=docs/examples python -m experiments.cifar10 --model=resnet_bn:resnet --alpha=formula \\
        --shadow_layer=3 --data_dir=../shared/datasets

What rev_nets needs of a module: ``__call__(x) -> logits``, ``features(x, layer)`` (the map the generator runs
backwards), ``depth``, ``input_shape`` and ``num_classes``.
"""

from collections.abc import Sequence

import jax
from flax import nnx


class BasicBlock(nnx.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; the shortcut is a strided 1x1 conv and BatchNorm
    where the block changes the resolution or the width."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=stride, use_bias=False, rngs=rngs)
        self.norm1 = nnx.BatchNorm(c_out, rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), use_bias=False, rngs=rngs)
        self.norm2 = nnx.BatchNorm(c_out, rngs=rngs)
        projects = stride != 1 or c_in != c_out
        self.project = nnx.Conv(c_in, c_out, (1, 1), strides=stride, use_bias=False, rngs=rngs) if projects else None
        self.project_norm = nnx.BatchNorm(c_out, rngs=rngs) if projects else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.norm2(self.conv2(nnx.relu(self.norm1(self.conv1(x)))))
        shortcut = x if self.project is None else self.project_norm(self.project(x))
        return nnx.relu(h + shortcut)


class ResNet(nnx.Module):
    """A 3x3 stem, then one stage per width (the first block of each later stage halves the resolution), global
    average pooling and a linear head. Hidden layer ``l`` is stage ``l``'s output."""

    def __init__(
        self,
        widths: Sequence[int],
        blocks: int,
        num_classes: int,
        input_shape: Sequence[int],
        *,
        rngs: nnx.Rngs,
    ):
        self.stem = nnx.Conv(input_shape[-1], widths[0], (3, 3), use_bias=False, rngs=rngs)
        self.stem_norm = nnx.BatchNorm(widths[0], rngs=rngs)
        stages, c_in = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stage = [
                BasicBlock(c_in if b == 0 else width, width, stride if b == 0 else 1, rngs=rngs) for b in range(blocks)
            ]
            stages.append(nnx.List(stage))
            c_in = width
        self.stages = nnx.List(stages)
        self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)
        self.depth = len(widths)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def features(self, x: jax.Array, layer: int) -> jax.Array:
        h = nnx.relu(self.stem_norm(self.stem(x)))
        for stage in self.stages[:layer]:
            for block in stage:
                h = block(h)
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x, self.depth).mean(axis=(1, 2)))


def resnet(*, rngs: nnx.Rngs, widths: Sequence[int] = (16, 32, 64), blocks: int = 3, num_classes: int = 10) -> ResNet:
    """ResNet-20 for 32x32x3 images by default (``blocks`` per stage; 3 -> 20 layers, 9 -> 56)."""
    return ResNet(tuple(widths), blocks, num_classes, (32, 32, 3), rngs=rngs)
