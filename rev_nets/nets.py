"""Nets as static descriptions plus plain-pytree params.

A ``Net`` is hidden ReLU layers followed by a dense linear classifier head.
Hidden layer ``l`` (1-based, as in the paper's h1, h2, h3) is the output of
``net.layers[l - 1]``; layer 0 is the input. The input shape is part of the
description because the generator must know every layer's input shape to
transpose it without seeing a real input. A net made by one of the factories
below records that call (``record``), so that a run saves it by factory and
arguments (``models.build`` rebuilds it); a net put together by hand has no
record.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rev_nets import layers as L
from rev_nets import models
from rev_nets.errors import InputError, SettingError

Params = dict  # {"hidden": [{"w", "b"}, ...], "head": {"w", "b"}}


@dataclasses.dataclass(frozen=True)
class Net:
    """Hidden layers ``layers``, then a linear head with ``num_classes`` outputs."""

    layers: tuple[L.Layer, ...]
    num_classes: int
    input_shape: tuple[int, ...]
    # How config.json names the net; metadata, not part of the description (equality, hash and repr ignore it).
    record: models.ModelConfig | None = dataclasses.field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self):
        if not self.layers:
            raise InputError("A Net needs at least one hidden layer.")
        if self.num_classes < 2:
            raise InputError(f"num_classes must be at least 2, got {self.num_classes}.")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        layer_shapes(self)  # Fails early, with the reason, on sizes that do not fit.

    @property
    def depth(self) -> int:
        """Number of hidden layers: valid generator source layers are 1..depth."""
        return len(self.layers)

    # The ``models.Model`` protocol, so that training and SHADOW take a Net like any other model.
    def init(self, key: jax.Array) -> Params:
        return init(key, self)

    def forward(
        self, params: Params, x: jax.Array, *, key: jax.Array | None = None, dropout: float = 0.0
    ) -> models.Forward:
        return models.Forward(*forward(self, params, x, key=key, dropout=dropout))

    def features(self, params: Params, x: jax.Array, layer: int) -> jax.Array:
        return features(self, params, x, layer)

    def prepare(self, params: Params, images: jax.Array) -> Params:
        return params  # Nothing fitted to data.

    def param_groups(self, params: Params) -> str:
        return "trained"  # Every weight and bias; a Net holds no statistics.

    def with_stats(self, params: Params, stats, *, average: bool = False) -> Params:
        return params


def layer_shapes(net: Net) -> tuple[tuple[int, ...], ...]:
    """Per-example shapes of layer 0 (input) .. layer ``depth``."""
    shapes = [net.input_shape]
    for layer in net.layers:
        shapes.append(L.out_shape(layer, shapes[-1]))
    return tuple(shapes)


def _whole(value, least: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


def _check_size(name: str, value, least: int = 1) -> None:
    """Refuses a factory's size argument (a ``SettingError`` naming it) that is not a whole number >= ``least``."""
    if not _whole(value, least):
        raise SettingError(name, f"must be a whole number >= {least}, got {value!r}.")


@models.recorded
def mnist_mlp(width: int = 1024, depth: int = 3, num_classes: int = 10) -> Net:
    """The MNIST MLP: 784 - width x depth - classes (default 784-1024x3-10)."""
    for name, value, least in (("width", width, 1), ("depth", depth, 1), ("num_classes", num_classes, 2)):
        _check_size(name, value, least)
    return Net(tuple(L.Dense(width) for _ in range(depth)), num_classes, (28, 28, 1))


@models.recorded
def cifar_cnn(
    channels: Sequence[int] = (64, 128, 256),
    num_classes: int = 10,
    pool: L.Pool = "max",
    input_shape: Sequence[int] = (32, 32, 3),
) -> Net:
    """The CIFAR CNN: 3x3 SAME convs, each followed by 2x2 pooling, then a dense head (sequences may be lists)."""
    if not (isinstance(channels, Sequence) and channels and all(_whole(c, 1) for c in channels)):
        raise SettingError("channels", f"must be one or more whole numbers >= 1, one per conv layer, got {channels!r}.")
    _check_size("num_classes", num_classes, 2)
    return Net(tuple(L.Conv(c, pool=pool) for c in channels), num_classes, input_shape)


def init(key: jax.Array, net: Net) -> Params:
    """Independent He-normal weights and zero biases for every layer and the head."""
    keys = jax.random.split(key, net.depth + 1)
    shapes = layer_shapes(net)
    hidden = [L.init(k, layer, s) for k, layer, s in zip(keys, net.layers, shapes)]
    head = L.init(keys[-1], L.Dense(net.num_classes), shapes[-1])
    return {"hidden": hidden, "head": head}


def param_count(params: Params) -> int:
    """Total number of scalars in ``params``."""
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


def _check_input(net: Net, x: jax.Array) -> None:
    if tuple(x.shape[1:]) != net.input_shape:
        raise InputError(
            f"Input batch has per-example shape {tuple(x.shape[1:])} but the net expects {net.input_shape}; "
            "pass a (batch, *input_shape) array."
        )


def features(net: Net, params: Params, x: jax.Array, layer: int) -> jax.Array:
    """Hidden layer ``layer`` (1-based) of a batch, without dropout: the map the generator runs backwards."""
    _check_input(net, x)
    h = x
    for spec, p in zip(net.layers[:layer], params["hidden"]):
        h = L.apply(spec, p, h).h
    return h


def forward(
    net: Net,
    params: Params,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    dropout: float = 0.0,
) -> tuple[jax.Array, tuple[L.Hidden, ...]]:
    """Logits and every hidden layer (with its pooling switches) for a batch.

    Dropout (inverted, rate ``dropout``) acts on each hidden layer's output as
    it enters the next layer; the recorded hiddens are taken before it, so they
    are what the generator should start from.
    """
    _check_input(net, x)
    if dropout and key is None:
        raise InputError("forward with dropout > 0 needs a PRNG key; pass key=jax.random.key(seed).")
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must be in [0, 1), got {dropout}.")
    hiddens = []
    h = x
    for i, (layer, p) in enumerate(zip(net.layers, params["hidden"])):
        hidden = L.apply(layer, p, h)
        hiddens.append(hidden)
        h = hidden.h
        if dropout:
            keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1.0 - dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - dropout), 0.0)
    head = params["head"]
    logits = L.linear(L.Dense(net.num_classes), head["w"], h) + head["b"]
    return logits, tuple(hiddens)
