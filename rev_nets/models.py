"""Any classifier as SHADOW sees it: pure functions of ``(params, x)``, built from one record, a factory and its
arguments.

A ``Model`` has ``depth`` source layers, an ``input_shape`` and
``num_classes``, pure functions of its ``params`` (all it carries: the
trained parameters and, for a net with BatchNorm, its running statistics):
``init(key) -> params``; ``forward(params, x, *, key, dropout) -> Forward``
(logits, each source layer as recorded before dropout or ``None``, and in
training mode, with a key, the batch statistics of ``x``); ``features(params,
x, layer) -> h_layer`` in evaluation mode, the function the generator runs
backwards; ``prepare(params, images)``, the params with their data-dependent
constants fitted to training images before the first step (an NNX module's
own ``prepare(images)``, e.g. a whitening filter; else as they are);
``param_groups(params)``, a pytree prefix of labels, read from the params'
structure alone (the training step calls it under ``jit``), that says how
the optimizer treats each leaf (``GROUPS``: trained, a normalisation layer's
own shift and scale, or fixed: no update, and no gradient in the step); and
``with_stats(params, stats, average=...)``, the params with their statistics
replaced by ``stats`` (the generator's view of a batch) or averaged with
them (BatchNorm's running update, at each layer's momentum). Its ``record`` is the ``ModelConfig`` that rebuilds it
(``None`` for a model put together by hand, which training refuses:
config.json could not say what it was).

As in equinox, a model is saved by its constructor's arguments and loaded
by calling the constructor again: ``build_model(ModelConfig(factory, arguments))``
imports ``package.module:factory``, calls it and returns the model it makes,
whatever its kind: a ``nets.Net`` (the built-in factories ``rev_nets.nets:mnist_mlp``
and ``rev_nets.nets:cifar_cnn`` record their own calls), an ``NnxModel`` of a
Flax NNX module (the factory takes ``rngs``) or a ``LinenModel`` of a
flax.linen module.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import linen, nnx

from rev_nets.errors import InputError, SettingError, setting_scope

DROPOUT_REFUSAL = (
    "dropout is the built-in nets' dropout; a Flax module drops out with its own dropout layers at the rates it was "
    "built with (set them in the model's arguments): train it with dropout=0."
)
MODULE_ATTRIBUTES = ("features", "depth", "input_shape", "num_classes")  # what a Flax module must define


class Arguments(Mapping):
    """A factory's keyword arguments, frozen: read as a mapping, hashable (a model holding them can be a static
    jit argument), kept as sorted JSON text, so that they read back exactly as config.json holds them."""

    def __init__(self, given: Mapping[str, Any] | str = "{}"):
        self.text = given if isinstance(given, str) else json.dumps(dict(given), sort_keys=True)

    def __getitem__(self, name: str) -> Any:
        return json.loads(self.text)[name]

    def __iter__(self):
        return iter(json.loads(self.text))

    def __len__(self) -> int:
        return len(json.loads(self.text))

    def __eq__(self, other) -> bool:
        if isinstance(other, Arguments):
            return self.text == other.text
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return self.text


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What builds a model: a factory ``package.module:factory`` and its keyword arguments (config.json's "model").

    ``arguments`` is given as a mapping of JSON values and kept as ``Arguments``
    (hashable, sorted JSON); ``keywords`` gives them back as a fresh dict.
    Tuples become lists: a factory must accept them.
    """

    factory: str
    arguments: Mapping[str, Any] = Arguments()

    def __post_init__(self):
        try:
            given = json.loads(self.arguments) if isinstance(self.arguments, str) else self.arguments
            arguments = Arguments(json.dumps(dict(given), sort_keys=True))
        except (TypeError, ValueError) as error:
            raise InputError(f"{self.factory}'s arguments must be JSON values, for config.json ({error}).") from None
        object.__setattr__(self, "arguments", arguments)

    @property
    def keywords(self) -> dict[str, Any]:
        """The factory's keyword arguments (a fresh dict)."""
        return json.loads(self.arguments.text)

    def to_json(self) -> dict[str, Any]:
        return {"factory": self.factory, "arguments": self.keywords}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> ModelConfig:
        return cls(record["factory"], record.get("arguments", {}))


class Forward(NamedTuple):
    """A forward pass: the logits, each source layer as recorded before dropout (or ``None``), and in training
    mode the batch statistics of its input (``None`` for a model without BatchNorm, and in evaluation mode)."""

    logits: jax.Array
    hiddens: Any = None
    stats: Any = None


class Model(Protocol):
    depth: int
    input_shape: tuple[int, ...]
    num_classes: int
    record: ModelConfig | None

    def init(self, key: jax.Array) -> Any: ...

    def forward(self, params, x: jax.Array, *, key: jax.Array | None = None, dropout: float = 0.0) -> Forward: ...

    def features(self, params, x: jax.Array, layer: int) -> jax.Array: ...

    def prepare(self, params, images: jax.Array) -> Any: ...

    def param_groups(self, params) -> Any: ...

    def with_stats(self, params, stats, *, average: bool = False) -> Any: ...


def param_count(model: Model) -> int:
    """Total number of scalars in ``model``'s params, from their shapes alone (nothing is allocated)."""
    return sum(leaf.size for leaf in jax.tree.leaves(jax.eval_shape(model.init, jax.random.key(0))))


def factory_name(factory: Callable) -> str:
    """The ``package.module:factory`` name a callable is recorded by."""
    return f"{factory.__module__}:{factory.__qualname__}"


def factory_signature(factory: Callable) -> inspect.Signature:
    """The parameters ``factory`` is called with: a class's ``__init__``'s without ``self`` (an NNX module class's
    own signature reads ``(*args, **kwargs)``, from its metaclass), else the callable's."""
    if isinstance(factory, type):
        parameters = list(inspect.signature(factory.__init__).parameters.values())[1:]
        return inspect.Signature(parameters)
    return inspect.signature(factory)


def import_factory(spec: str) -> Callable:
    """The callable named by ``package.module:factory``, or a ``SettingError`` ("factory ...") saying what is wrong
    with the name."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise SettingError("factory", f"must be package.module:factory, got {spec!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SettingError("factory", f"{spec}: cannot import {module_name} ({error}); put it on PYTHONPATH.") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise SettingError("factory", f"{spec}: {module_name} has no callable {name!r}.")
    return factory


def with_default_arguments(record: ModelConfig) -> ModelConfig:
    """``record`` with each argument its factory gives a JSON default written out, so that a record saved before
    the factory took an argument equals one that names its default (unchanged if the factory cannot be
    imported)."""
    try:
        signature = factory_signature(import_factory(record.factory))
    except SettingError:
        return record
    defaults = {}
    for name, parameter in signature.parameters.items():
        try:
            defaults[name] = json.loads(json.dumps(parameter.default))
        except TypeError:  # none (inspect's marker), or not a JSON value: no default a record could hold
            pass
    return ModelConfig(record.factory, defaults | record.keywords)


def _check_arguments(factory: Callable, record: ModelConfig, given: tuple[str, ...] = ()) -> None:
    """Refuses ``record``'s arguments (a ``SettingError`` "arguments ...") when ``factory`` cannot take them: an
    unknown name, a missing one (``given``: those the builder passes itself, e.g. ``rngs``)."""
    signature = factory_signature(factory)
    try:
        signature.bind(**dict.fromkeys(given), **record.keywords)
    except TypeError as error:
        takes = ", ".join(name for name in signature.parameters if name not in given) or "no arguments"
        raise SettingError("arguments", f"do not fit {record.factory} ({error}); it takes {takes}.") from None


def recorded(factory: Callable[..., Model]) -> Callable[..., Model]:
    """``factory`` (returning a dataclass model with a ``record`` field, e.g. a ``nets.Net``) made to set that
    record to its own call, so that what it builds can be saved in config.json and rebuilt by ``build_model``."""
    signature = factory_signature(factory)

    @functools.wraps(factory)
    def recording(*args, **kwargs):
        record = ModelConfig(factory_name(recording), signature.bind(*args, **kwargs).arguments)
        return dataclasses.replace(factory(*args, **kwargs), record=record)

    return recording


def build_model(model: ModelConfig | str | Callable, /, **arguments) -> Model:
    """The model a record describes: its factory imported and called with its arguments.

    ``model`` is a ``ModelConfig``, a ``package.module:factory`` name or the
    factory itself (a class defined in a notebook, say), with ``arguments``.
    A factory that takes ``rngs`` makes an NNX module (``nnx_model``); one
    that returns a flax.linen module makes a ``LinenModel``; one that returns a
    model (a ``nets.Net``) gives it, with its record set to this one. The
    factory is called with the record's arguments (JSON values), so that the
    model built is the one the record rebuilds.
    """
    make, record = _resolve(model, arguments)
    if "rngs" in factory_signature(make).parameters:
        return _nnx_model(make, record)
    _check_arguments(make, record)
    with setting_scope("arguments"):  # A factory's own check of an argument, e.g. "width must be >= 1".
        made = make(**record.keywords)
    if isinstance(made, linen.Module):
        return _linen_model(made, record)
    if all(
        hasattr(made, name)
        for name in ("init", "forward", "features", "prepare", "param_groups", "with_stats", "record")
    ):
        return made if made.record == record else dataclasses.replace(made, record=record)
    raise InputError(
        f"{record.factory} returned a {type(made).__name__}, not a model; return a nets.Net or a flax.linen module, "
        "or take rngs= and return an nnx.Module."
    )


def _resolve(model: ModelConfig | str | Callable, arguments: dict[str, Any]) -> tuple[Callable, ModelConfig]:
    """The factory and the record of ``build_model``'s (or ``nnx_model``'s, ``linen_model``'s) arguments."""
    if isinstance(model, ModelConfig):
        if arguments:
            raise InputError(f"give {model.factory}'s arguments in its ModelConfig or as keywords, not both.")
        return import_factory(model.factory), model
    if callable(model):
        return model, ModelConfig(factory_name(model), arguments)
    return import_factory(model), ModelConfig(model, arguments)


@dataclasses.dataclass(frozen=True)
class NnxModel:
    """An NNX module as a ``Model``: its graph is static, its ``nnx.Param`` and ``nnx.BatchStat`` state the params.

    The module must define ``__call__(x) -> logits``, ``features(x, layer)``
    and the attributes ``depth``, ``input_shape`` and ``num_classes``, and hold
    no state but ``nnx.Param``, the statistics of its ``nnx.BatchNorm`` layers
    and the RNG streams of its ``nnx.Dropout`` layers, so that params in a
    TrainState are the whole learned model: replicated, donated, saved and
    resumed like a ``Net``'s. The streams are not carried: a ``forward`` given
    a key runs in training mode, with streams drawn from that key (one dropout
    mask per key, as the built-in nets') and each BatchNorm normalising by its
    batch's statistics, which it returns (read exactly, not back-solved from
    the running averages); without a key, and in ``features``, BatchNorm uses
    the statistics the params hold and nothing is drawn. ``with_stats``
    averages statistics in at each layer's own momentum. Two are equal when
    their records are: the record rebuilds the module.
    """

    record: ModelConfig
    build: Callable[..., nnx.Module] = dataclasses.field(compare=False, repr=False)
    graphdef: Any = dataclasses.field(compare=False, repr=False)
    streams: Any = dataclasses.field(compare=False, repr=False)  # abstract nnx.RngState of the dropout layers
    momenta: Any = dataclasses.field(compare=False, repr=False)  # each BatchStat's layer momentum (floats), or None
    norms: frozenset = dataclasses.field(compare=False, repr=False)  # the paths of its nnx.BatchNorm layers
    depth: int
    input_shape: tuple[int, ...]
    num_classes: int

    def init(self, key: jax.Array) -> nnx.State:
        module = self.build(rngs=nnx.Rngs(key), **self.record.keywords)
        return nnx.split(module, CARRIED, ...)[1]

    def module(self, params: nnx.State, key: jax.Array | None = None) -> nnx.Module:
        """The module with ``params``: training mode with streams drawn from ``key``, or evaluation mode.

        In training mode every BatchNorm's momentum is 0, so that after a call
        its statistics are exactly those of the batch it normalised.
        """
        module = nnx.merge(self.graphdef, params, fresh_streams(self.streams, key), copy=True)  # never writes params
        training = key is not None
        module.set_attributes(deterministic=not training, use_running_average=not training, raise_if_not_found=False)
        if training:
            for _, layer in nnx.iter_modules(module):
                if isinstance(layer, nnx.BatchNorm):
                    layer.momentum = 0.0
        return module

    def forward(self, params, x: jax.Array, *, key: jax.Array | None = None, dropout: float = 0.0) -> Forward:
        if dropout:
            raise InputError(DROPOUT_REFUSAL)
        module = self.module(params, key)
        logits = module(x)
        stats = nnx.state(module, nnx.BatchStat) if key is not None and self.momenta is not None else None
        return Forward(logits, None, stats)

    def features(self, params, x: jax.Array, layer: int) -> jax.Array:
        return self.module(params).features(x, layer)

    def prepare(self, params, images: jax.Array) -> nnx.State:
        module = self.module(params)
        if hasattr(module, "prepare"):
            module.prepare(images)
        return nnx.state(module, CARRIED)

    def param_groups(self, params) -> nnx.State:
        def group(path, leaf):
            if not isinstance(leaf, nnx.Param):
                return "fixed"
            return "norm" if tuple(key.key for key in path[:-1]) in self.norms else "trained"

        return jax.tree_util.tree_map_with_path(group, params, is_leaf=_is_variable)

    def with_stats(self, params, stats, *, average: bool = False) -> nnx.State:
        if stats is None:
            return params
        if average:
            old = nnx.filter_state(params, nnx.BatchStat)
            stats = jax.tree.map(_running_average, self.momenta, old, stats)
        return nnx.merge_state(params, stats)


class Constant(nnx.Variable):
    """A module's value fitted to data before training and then held, e.g. a whitening filter from the training
    images' patch covariance (``NnxModel.prepare``): carried in params, saved and resumed, never moved by the
    optimizer (a ``Param`` behind ``stop_gradient`` would still shrink under weight decay)."""


GROUPS = ("trained", "norm", "fixed")  # how the optimizer treats a leaf: moved; moved at the norm rate; held


def display_name(model: Model) -> str:
    """How a message names ``model``: its factory, or its class where it has no record."""
    return model.record.factory if model.record else type(model).__name__


def checked_param_groups(model: Model, params) -> Any:
    """``model.param_groups(params)``, every label checked to be one of ``GROUPS`` (a model of one's own names
    its own), so that a wrong one stops with one sentence, not optax's."""
    labels = model.param_groups(params)
    unknown = sorted({repr(label) for label in jax.tree.leaves(labels) if label not in GROUPS})
    if unknown:
        raise InputError(
            f"model {display_name(model)}'s param_groups gives the labels {', '.join(unknown)}, which the optimizer does not know; "
            f"label each leaf one of {', '.join(GROUPS)}."
        )
    return labels


def hold_fixed(model: Model, params) -> Any:
    """``params`` with the ``fixed`` group (statistics, constants) behind ``stop_gradient``: a step's gradient is
    zero there, so gradient clipping and the gradient norm count only what the optimizer moves, and no gradient
    of a constant (the whitening filter) is computed."""
    hold = lambda label, leaf: jax.lax.stop_gradient(leaf) if label == "fixed" else leaf
    return jax.tree.map(hold, model.param_groups(params), params)


def check_training_forward(model: Model) -> None:
    """Traces a training forward abstractly (nothing computed), so that a module that cannot run one (a dropout
    layer built without an RNG stream) stops before any work with one sentence."""
    params = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, *model.input_shape), jnp.float32)
    try:
        jax.eval_shape(lambda p, v, k: model.forward(p, v, key=k).logits, params, x, jax.random.key(0))
    except TypeError as error:  # e.g. ``__call__(self, x, *, rngs)``: streams passed at call time
        if "rngs" not in str(error):
            raise
        raise InputError(
            f"model {display_name(model)} asks for rngs when called ({str(error).splitlines()[0].strip()}), but a "
            "model is called on its inputs alone; build its nnx.Dropout layers with rngs=rngs in __init__ instead."
        ) from None
    except ValueError as error:
        if "rngs" not in str(error):
            raise
        raise InputError(
            f"model {display_name(model)} draws random numbers in training from a stream it was not given "
            f"({str(error).splitlines()[0].strip()}); build its nnx.Dropout layers with rngs=rngs."
        ) from None


def holds_stats(model: Model) -> bool:
    """Whether ``model`` carries batch statistics (an NNX module with BatchNorm)."""
    return isinstance(model, NnxModel) and model.momenta is not None


CARRIED = (nnx.Param, nnx.BatchStat, Constant)  # the NNX state a model's params hold


def _is_variable(value) -> bool:
    return isinstance(value, nnx.Variable)


def _running_average(momentum: float, old: nnx.Variable, batch: nnx.Variable) -> nnx.Variable:
    """BatchNorm's running update ``momentum * old + (1 - momentum) * batch`` of one statistic."""
    return old.replace(momentum * old[...] + (1 - momentum) * batch[...])


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
    return _nnx_model(*_resolve(factory, arguments))


def _nnx_model(build: Callable[..., nnx.Module], record: ModelConfig) -> NnxModel:
    _check_arguments(build, record, given=("rngs",))
    with setting_scope("arguments"):  # A factory's own check of an argument, e.g. "widths must be ...".
        module = nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0), **record.keywords))
    _check_attributes(module, record)
    graphdef, params, streams, rest = nnx.split(module, CARRIED, nnx.RngState, ...)
    if jax.tree.leaves(rest):
        held = jax.tree_util.tree_leaves_with_path(rest, is_leaf=_is_variable)
        named = sorted(f"{'.'.join(str(key.key) for key in path)}: {type(value).__name__}" for path, value in held)
        raise InputError(
            f"model {record.factory} holds state other than nnx.Param, BatchNorm statistics, models.Constant and RNG "
            f"streams ({', '.join(named)}); make it a parameter or a constant of the module."
        )
    norms = {tuple(path): layer for path, layer in nnx.iter_modules(module) if isinstance(layer, nnx.BatchNorm)}
    momenta = _momenta(norms, params, record)
    return NnxModel(record, build, graphdef, streams, momenta, frozenset(norms), *_shape_attributes(module))


def _momenta(norms: dict[tuple, nnx.BatchNorm], params: nnx.State, record: ModelConfig) -> nnx.State | None:
    """Each ``nnx.BatchStat``'s layer momentum (``norms``: the module's BatchNorm layers by path), shaped like the
    statistics (``None`` without any); statistics outside an ``nnx.BatchNorm`` are refused by name, since their
    update rule is not known."""
    stats = nnx.filter_state(params, nnx.BatchStat)
    if not jax.tree.leaves(stats):
        return None

    def momentum(path, _):
        owner = norms.get(tuple(key.key for key in path[:-1]))
        if not isinstance(owner, nnx.BatchNorm):
            where = ".".join(str(key.key) for key in path)
            raise InputError(
                f"model {record.factory} holds batch statistics at {where} outside an nnx.BatchNorm; "
                "use nnx.BatchNorm, whose running update training knows."
            )
        return float(owner.momentum)

    return jax.tree_util.tree_map_with_path(momentum, stats, is_leaf=_is_variable)


@dataclasses.dataclass(frozen=True)
class LinenModel:
    """A flax.linen module as a ``Model``: its ``"params"`` collection is the params pytree.

    What ``NnxModel`` asks of an NNX module, in linen: ``__call__(x, *,
    train)`` or ``__call__(x, *, deterministic)`` (or neither, for a module
    without dropout) returning logits, a method ``features(x, layer)``
    without dropout, the attributes ``depth``, ``input_shape`` and
    ``num_classes``, and no variables but ``"params"`` (no batch statistics).
    A ``forward`` given a key runs in training mode with that key as the
    ``"dropout"`` RNG; without a key, and in ``features``, it is
    deterministic. Two are equal when their records are.
    """

    record: ModelConfig
    module: linen.Module = dataclasses.field(compare=False, repr=False)
    mode: str | None = dataclasses.field(compare=False, repr=False)  # __call__'s "train" or "deterministic", if any
    depth: int
    input_shape: tuple[int, ...]
    num_classes: int

    def _mode(self, training: bool) -> dict[str, bool]:
        """``__call__``'s keyword for training or deterministic mode."""
        return {} if self.mode is None else {self.mode: training if self.mode == "train" else not training}

    def init(self, key: jax.Array) -> dict:
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        return self.module.init({"params": key}, x, **self._mode(False))["params"]

    def forward(self, params, x: jax.Array, *, key: jax.Array | None = None, dropout: float = 0.0):
        if dropout:
            raise InputError(DROPOUT_REFUSAL)
        rngs = {} if key is None else {"dropout": key}
        return Forward(self.module.apply({"params": params}, x, rngs=rngs, **self._mode(key is not None)))

    def features(self, params, x: jax.Array, layer: int) -> jax.Array:
        return self.module.apply({"params": params}, x, layer, method="features")

    def prepare(self, params, images: jax.Array):
        return params

    def param_groups(self, params) -> str:
        return "trained"

    def with_stats(self, params, stats, *, average: bool = False):
        return params


def linen_model(factory: str | Callable[..., linen.Module], **arguments) -> LinenModel:
    """The ``LinenModel`` of the module ``factory(**arguments)`` (a module class, or a function returning a
    module), checked on an abstract init (nothing allocated)."""
    make, record = _resolve(factory, arguments)
    _check_arguments(make, record)
    module = make(**record.keywords)
    if not isinstance(module, linen.Module):
        raise InputError(f"{record.factory} returned a {type(module).__name__}, not a flax.linen module.")
    return _linen_model(module, record)


def _linen_model(module: linen.Module, record: ModelConfig) -> LinenModel:
    _check_attributes(module, record)
    keywords = inspect.signature(module.__call__).parameters
    mode = next((name for name in ("train", "deterministic") if name in keywords), None)
    model = LinenModel(record, module, mode, *_shape_attributes(module))
    x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init({"params": jax.random.key(0)}, x, **model._mode(False)), x)
    others = sorted(set(variables) - {"params"})
    if others:
        raise InputError(
            f"model {record.factory} holds variables other than params ({', '.join(others)}); "
            "freeze batch statistics into parameters."
        )
    return model


ModuleModel = NnxModel | LinenModel  # a Flax module as a Model: it drops out with its own layers


def _check_attributes(module, record: ModelConfig) -> None:
    missing = [name for name in MODULE_ATTRIBUTES if not hasattr(module, name)]
    if missing:
        raise InputError(f"model {record.factory} builds a module without {', '.join(missing)}; see rev_nets.nnx_zoo.")


def _shape_attributes(module) -> tuple[int, tuple[int, ...], int]:
    """A module's ``depth``, ``input_shape`` and ``num_classes``, as plain values."""
    return int(module.depth), tuple(module.input_shape), int(module.num_classes)
