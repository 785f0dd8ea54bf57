"""Any classifier as SHADOW sees it: pure functions of ``(params, x)``, and Flax NNX modules in that form.

A ``Model`` has ``depth`` source layers, an ``input_shape`` and
``num_classes``, and three pure functions: ``init(key) -> params``,
``forward(params, x, *, key, dropout) -> (logits, hiddens)`` (``hiddens``:
each source layer as recorded before dropout, or ``None``) and
``features(params, x, layer) -> h_layer`` without dropout, the function the
generator runs backwards. ``nets.Net`` is one; ``NnxModel`` makes one of a
Flax NNX module built by a factory named ``package.module:factory``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from rev_nets.errors import InputError

DROPOUT_REFUSAL = (
    "--dropout is the built-in nets' dropout; an NNX model drops out with its own nnx.Dropout layers at the rates "
    "it was built with (set them through --model_args): train it with --dropout=0."
)


class Model(Protocol):
    depth: int
    input_shape: tuple[int, ...]
    num_classes: int

    def init(self, key: jax.Array) -> Any: ...

    def forward(self, params, x: jax.Array, *, key: jax.Array | None = None, dropout: float = 0.0): ...

    def features(self, params, x: jax.Array, layer: int) -> jax.Array: ...


def param_count(model: Model) -> int:
    """Total number of scalars in ``model``'s params, from their shapes alone (nothing is allocated)."""
    return sum(leaf.size for leaf in jax.tree.leaves(jax.eval_shape(model.init, jax.random.key(0))))


def import_factory(spec: str) -> Callable[..., nnx.Module]:
    """The callable named by ``package.module:factory``, or one sentence saying what is wrong with the name."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise InputError(f"--model must be package.module:factory, got {spec!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"--model={spec}: cannot import {module_name} ({error}); put it on PYTHONPATH.") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise InputError(f"--model={spec}: {module_name} has no callable {name!r}.")
    return factory


@dataclasses.dataclass(frozen=True)
class NnxModel:
    """An NNX module as a ``Model``: its graph is static, its ``nnx.Param`` state is the params pytree.

    The module must define ``__call__(x) -> logits``, ``features(x, layer)``
    and the attributes ``depth``, ``input_shape`` and ``num_classes``, and hold
    no state but ``nnx.Param`` and the RNG streams of its ``nnx.Dropout``
    layers (no batch statistics), so that params in a TrainState are the whole
    learned model: replicated, donated, saved and resumed like a ``Net``'s.
    The streams are not carried: a ``forward`` given a key runs in training
    mode with streams drawn from that key (one dropout mask per key, as the
    built-in nets'); without a key, and in ``features``, it is deterministic.
    """

    factory: str  # package.module:factory, as config.json records it
    arguments: str  # the factory's keyword arguments as sorted JSON: hashable, and what config.json records
    build: Callable[..., nnx.Module] = dataclasses.field(compare=False, repr=False)
    graphdef: Any = dataclasses.field(compare=False, repr=False)
    streams: Any = dataclasses.field(compare=False, repr=False)  # abstract nnx.RngState of the dropout layers
    depth: int
    input_shape: tuple[int, ...]
    num_classes: int

    def init(self, key: jax.Array) -> nnx.State:
        module = self.build(rngs=nnx.Rngs(key), **json.loads(self.arguments))
        return nnx.split(module, nnx.Param, ...)[1]

    def module(self, params: nnx.State, key: jax.Array | None = None) -> nnx.Module:
        """The module with ``params``: training mode with streams drawn from ``key``, or deterministic."""
        module = nnx.merge(self.graphdef, params, fresh_streams(self.streams, key))
        module.set_attributes(deterministic=key is None, raise_if_not_found=False)
        return module

    def forward(self, params, x: jax.Array, *, key: jax.Array | None = None, dropout: float = 0.0):
        if dropout:
            raise InputError(DROPOUT_REFUSAL)
        return self.module(params, key)(x), None

    def features(self, params, x: jax.Array, layer: int) -> jax.Array:
        return self.module(params).features(x, layer)

    def from_saved(self, saved: dict) -> nnx.State:
        """Params from a checkpoint read without a target (nested dicts with string keys), as an ``nnx.State``."""

        def pick(path, _):
            node = saved
            for entry in path:
                node = node[str(getattr(entry, "key", getattr(entry, "name", entry)))]
            return node

        return jax.tree_util.tree_map_with_path(pick, jax.eval_shape(self.init, jax.random.key(0)))

    def describe(self) -> dict[str, Any]:
        """What config.json records: the factory and its arguments."""
        return {"factory": self.factory, "arguments": json.loads(self.arguments)}


def fresh_streams(streams: nnx.State, key: jax.Array | None) -> nnx.State:
    """Concrete RNG streams shaped like the abstract ``streams``: keys folded from ``key`` (from 0 if None: a
    deterministic module draws none), counts zero."""
    key = jax.random.key(0) if key is None else key
    leaves, treedef = jax.tree.flatten(streams)
    fresh = [
        jax.random.fold_in(key, i)
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        else jnp.zeros((), leaf.dtype)
        for i, leaf in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, fresh)


def nnx_model(factory: str | Callable[..., nnx.Module], **arguments) -> NnxModel:
    """The ``NnxModel`` of ``factory(rngs=..., **arguments)``, checked on an abstract build (nothing allocated).

    ``factory`` is a ``package.module:factory`` name or the callable itself
    (a module class defined in a notebook, say).
    """
    if callable(factory):
        build, factory = factory, f"{factory.__module__}:{factory.__qualname__}"
    else:
        build = import_factory(factory)
    try:
        recorded = json.dumps(arguments, sort_keys=True)
    except TypeError as error:
        raise InputError(f"{factory}'s arguments must be JSON values, for config.json ({error}).") from None
    module = nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0), **arguments))
    missing = [name for name in ("features", "depth", "input_shape", "num_classes") if not hasattr(module, name)]
    if missing:
        raise InputError(f"--model={factory} builds a module without {', '.join(missing)}; see rev_nets.nnx_zoo.")
    graphdef, _, streams, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
    if jax.tree.leaves(rest):
        raise InputError(
            f"--model={factory} holds state other than nnx.Param and RNG streams "
            f"({', '.join(sorted(map(str, rest.keys())))}); freeze batch statistics into parameters."
        )
    return NnxModel(
        factory,
        recorded,
        build,
        graphdef,
        streams,
        int(module.depth),
        tuple(module.input_shape),
        int(module.num_classes),
    )
