"""The generator as one transformation of a traced ReLU computation ``x -> h``.

For a net of linear maps, ReLU and pooling, running the net backwards from
``h`` is a vector-Jacobian product of ``x -> h`` at the real input with
cotangent ``h``, with one rule swapped: a ReLU's backward signal is the ReLU
of the signal (not the signal masked by the forward sign). The other rules:

- a linear map (``dot_general``, ``conv_general_dilated``) gives ``alpha_k A_k^T``;
- bias adds and the other linear, structural primitives take their plain VJP;
- max pooling routes each value to its window's first winner (the switches),
  or copies it over the window without switches;
- average pooling (a window sum divided by the window's area) copies;
- Bernoulli(rho) masks act on the signal at each map's input (a layer boundary).

``trace`` inlines every jit, custom_jvp, custom_vjp and remat into one flat
graph and refuses, by whitelist and before any compute, every primitive on
the path from the input to ``h`` whose reverse is not defined. ``run``
evaluates the graph forward and then backward. The swapped rules live only
in this separate pass, never in the forward that gives a training loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import flax.errors
import jax
import jax.extend.core as jc
import jax.numpy as jnp
import numpy as np
from jax import lax

from rev_nets.errors import InputError

CALLS = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}
STRUCTURAL = {
    "reshape", "pad", "slice", "concatenate", "transpose", "broadcast_in_dim", "squeeze",
    "expand_dims", "convert_element_type", "copy", "copy_p", "rev", "sharding_constraint",
}  # fmt: skip
LINEAR = STRUCTURAL | {"add", "add_any", "sub", "neg", "reduce_sum", "reduce_window_sum", "reduce_precision"}
ONE_SIDED = {"mul", "div", "select_n", "dynamic_slice"}  # linear while the other operands do not depend on x
MAPS = {"dot_general", "conv_general_dilated"}
MAX_POOLS = {"reduce_max", "reduce_window_max"}
NO_SIGNAL = {"gt", "ge", "lt", "le", "eq", "ne", "argmax", "argmin", "and", "or", "not"}
STATIC_FOLD = {"convert_element_type", "broadcast_in_dim", "reshape", "squeeze", "expand_dims"}


@dataclasses.dataclass
class Op:
    """One primitive of the flat graph: value ids in, value ids out."""

    prim: jc.Primitive
    params: dict[str, Any]
    ins: tuple[int, ...]
    outs: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.prim.name


@dataclasses.dataclass(frozen=True)
class LinearMap:
    """A linear map on the path: its op, which operand is the weight, and its calibration inputs."""

    op: int
    weight_operand: int
    anchor: int  # the value whose signal this map's sampling mask acts on (its layer's input)
    after_relu: bool  # the map's input went through a ReLU (c = 2), else it is the model input (c = 1)
    scales: tuple[tuple[str, int], ...]  # ("mul" | "div", value id) between the map and its nonlinearity
    undefined: str | None  # why the calibrated alpha is undefined, or None


@dataclasses.dataclass
class Graph:
    """``features`` traced and inlined, with what the reverse pass needs to know about it."""

    ops: list[Op]
    consts: dict[int, Any]
    dep: frozenset[int]  # values that depend on the input
    avals: dict[int, Any]
    input: int
    output: int
    live: tuple[int, ...]  # ops the output needs, in forward order
    kinds: dict[int, str]  # op index on the path -> rule: plain, relu, max_pool, mean, map, none
    relu_operand: dict[int, int]  # relu op index -> position of the value it rectifies
    maps: tuple[LinearMap, ...]
    anchors: tuple[int, ...]  # mask sites, in forward order

    @property
    def num_maps(self) -> int:
        return len(self.maps)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.avals[self.output].shape)

    @property
    def out_dtype(self):
        return self.avals[self.output].dtype


# ------------------------------------------------------------------ trace --


def trace(features: Callable, x: jax.Array, plain_vjp: Sequence[str] = ()) -> Graph:
    """``features`` at ``x`` as a checked flat graph; raises ``InputError`` naming any primitive it cannot reverse."""
    try:
        closed = jax.make_jaxpr(features)(x)
    except flax.errors.TraceContextError as error:
        if "BatchStat" in str(error):
            raise InputError(
                "features updates batch statistics as it runs: an nnx.BatchNorm in training mode that reverse did "
                "not find (it looks in a bound method's module and in the modules a closure, global, partial, "
                "dict, list or non-callable object holds, two levels deep, and cannot see "
                "use_running_average=False passed in a call), or a BatchStat of a layer of its own; pass the "
                "module's bound method or a closure over the module, or put it in evaluation mode (module.eval()) "
                "to reverse at its running averages."
            ) from None
        raise InputError(
            "features changes a Flax NNX module's state as it runs (dropout drawing from its RNG streams, or "
            "statistics outside an nnx.BatchNorm), which cannot be traced; put the module in evaluation mode "
            "(module.eval()) before reversing it."
        ) from None
    if len(closed.jaxpr.invars) != 1 or len(closed.jaxpr.outvars) != 1:
        raise InputError("features must map one array (the batch) to one array (the source hidden layer).")
    graph = _Builder()
    (input_id,) = graph.fresh_like(closed.jaxpr.invars)
    (output_id,) = graph.inline(closed.jaxpr, closed.consts, [input_id])
    return _analyse(graph, input_id, output_id, set(plain_vjp))


class _Builder:
    """Inlines nested jaxprs into one list of primitive ops over integer value ids."""

    def __init__(self):
        self.ops, self.consts, self.static, self.avals = [], {}, {}, {}

    def fresh(self, aval) -> int:
        i = len(self.avals)
        self.avals[i] = aval
        return i

    def fresh_like(self, variables) -> list[int]:
        return [self.fresh(v.aval) for v in variables]

    def constant(self, value, static: bool) -> int:
        i = self.fresh(jax.ShapeDtypeStruct(np.shape(value), np.result_type(value) if static else value.dtype))
        self.consts[i] = value
        if static:
            self.static[i] = np.asarray(value)
        return i

    def inline(self, jaxpr: jc.Jaxpr, consts: Sequence[Any], in_ids: Sequence[int]) -> list[int]:
        env = dict(zip(jaxpr.invars, in_ids))
        env |= {v: self.constant(c, isinstance(c, np.ndarray)) for v, c in zip(jaxpr.constvars, consts)}

        def read(atom):
            return self.constant(atom.val, True) if isinstance(atom, jc.Literal) else env[atom]

        for eqn in jaxpr.eqns:
            ins = [read(a) for a in eqn.invars]
            inner = _inner_jaxpr(eqn)
            if inner is not None:
                outs = self.inline(inner.jaxpr, inner.consts, ins)
            else:
                outs = self.fresh_like(eqn.outvars)
                self.ops.append(Op(eqn.primitive, dict(eqn.params), tuple(ins), tuple(outs)))
                self._fold_static(self.ops[-1])
            env.update(zip(eqn.outvars, outs))
        return [read(a) for a in jaxpr.outvars]

    def _fold_static(self, op: Op) -> None:
        """Literal-derived values (a broadcast zero, say) are known at trace time: ReLU is recognised by them."""
        if op.name in STATIC_FOLD and all(i in self.static for i in op.ins):
            with jax.ensure_compile_time_eval():
                (value,) = _bind(op, [self.static[i] for i in op.ins])
            self.static[op.outs[0]] = np.asarray(value)


def _inner_jaxpr(eqn) -> jc.ClosedJaxpr | None:
    field = CALLS.get(eqn.primitive.name)
    if field is None:
        return None
    inner = eqn.params[field]
    return inner if isinstance(inner, jc.ClosedJaxpr) else jc.ClosedJaxpr(inner, ())


def _bind(op: Op, args: Sequence[Any]) -> list[Any]:
    out = op.prim.bind(*args, **op.params)
    return list(out) if op.prim.multiple_results else [out]


def _analyse(b: _Builder, input_id: int, output_id: int, plain_vjp: set[str]) -> Graph:
    dep = {input_id}
    producer = {}
    for k, op in enumerate(b.ops):
        producer.update({o: k for o in op.outs})
        if any(i in dep for i in op.ins):
            dep.update(op.outs)
    live = {output_id}
    for op in reversed(b.ops):
        if any(o in live for o in op.outs):
            live.update(op.ins)
    path = [k for k, op in enumerate(b.ops) if any(i in dep for i in op.ins) and any(o in live for o in op.outs)]
    if output_id not in dep:
        raise InputError("features' output does not depend on its input; return the source hidden layer of x.")
    ctx = _Context(b, dep, producer, live)
    kinds, relu_operand, refused = {}, {}, {}
    for k in path:
        try:
            kinds[k], operand = ctx.classify(k, plain_vjp)
        except _Refused as refusal:  # Gathered, so that one sentence names every primitive plain_vjp needs.
            refused.setdefault(refusal.name, refusal.why)
            continue
        if operand is not None:
            relu_operand[k] = operand
    if refused:
        raise _refusal(refused)
    after_relu = _after_relu(b, input_id, path, kinds)
    maps = tuple(ctx.linear_map(k, after_relu) for k in path if kinds[k] == "map")
    anchors = sorted({m.anchor for m in maps}, key=lambda a: -1 if a == input_id else producer[a])
    live_ops = tuple(k for k, op in enumerate(b.ops) if any(o in live for o in op.outs))
    return Graph(
        b.ops,
        b.consts,
        frozenset(dep),
        b.avals,
        input_id,
        output_id,
        live_ops,
        kinds,
        relu_operand,
        maps,
        tuple(anchors),
    )


def _after_relu(b: _Builder, input_id: int, path, kinds) -> dict[int, bool]:
    flags = {input_id: False}
    for k in path:
        op = b.ops[k]
        value = kinds[k] == "relu" or any(flags.get(i, False) for i in op.ins)
        flags.update({o: value for o in op.outs})
    return flags


class _Context:
    """Structural questions about the flat graph, asked while classifying its path."""

    def __init__(self, b: _Builder, dep, producer, live):
        self.b, self.dep, self.producer = b, dep, producer
        self.users = {}
        for k, op in enumerate(b.ops):
            if any(o in live for o in op.outs):
                for i in op.ins:
                    self.users.setdefault(i, []).append(k)

    def is_zero(self, i: int) -> bool:
        return i in self.b.static and not np.any(self.b.static[i])

    def dep_positions(self, k: int) -> list[int]:
        return [p for p, i in enumerate(self.b.ops[k].ins) if i in self.dep]

    def classify(self, k: int, plain_vjp: set[str]) -> tuple[str, int | None]:
        """The rule op ``k`` takes, or ``_Refused`` naming why it has none."""
        op = self.b.ops[k]
        name, dep = op.name, self.dep_positions(k)
        if name in plain_vjp:
            return "plain", None
        if name == "max" and len(dep) == 1 and self.is_zero(op.ins[1 - dep[0]]):
            return "relu", dep[0]
        if name == "select_n" and self._select_is_relu(op):
            return "relu", 2
        if name in MAPS:
            if len(dep) != 1 or (name == "conv_general_dilated" and dep != [0]):
                raise _Refused(name, f"{name} with both operands depending on the input is not a linear map")
            return "map", None
        if name in MAX_POOLS:
            return "max_pool", None
        if name == "div" and dep == [0] and self._is_mean(op):
            return "mean", None
        if name in NO_SIGNAL or all(not jnp.issubdtype(self.b.avals[o].dtype, jnp.inexact) for o in op.outs):
            return "none", None
        if name in LINEAR or (name in ONE_SIDED and self._one_sided(op, dep)):
            return "plain", None
        if name in ONE_SIDED or name == "max":
            raise _Refused(name, f"{name} of input-dependent values is not linear, ReLU or pooling")
        raise _Refused(name, f"{name} has no reverse rule here (linear maps, ReLU and pooling do)")

    def _one_sided(self, op: Op, dep: list[int]) -> bool:
        return {"mul": len(dep) == 1, "div": dep == [0], "select_n": 0 not in dep, "dynamic_slice": dep == [0]}[op.name]

    def _select_is_relu(self, op: Op) -> bool:
        """``where(u > 0, u, 0)``: a select between zero and ``u`` on ``u``'s sign."""
        if len(op.ins) != 3 or op.ins[0] not in self.producer or not self.is_zero(op.ins[1]):
            return False
        test = self.b.ops[self.producer[op.ins[0]]]
        u = op.ins[2]
        if test.name in ("gt", "ge"):
            return test.ins[0] == u and self.is_zero(test.ins[1])
        if test.name in ("lt", "le"):
            return test.ins[1] == u and self.is_zero(test.ins[0])
        return False

    def _is_mean(self, op: Op) -> bool:
        """A window (or axis) sum divided by its window's area: average pooling."""
        num, den = op.ins
        if num not in self.producer or den not in self.b.static:
            return False
        total = self.b.ops[self.producer[num]]
        if total.name == "reduce_window_sum":
            area = math.prod(total.params["window_dimensions"])
        elif total.name == "reduce_sum":
            shape = self.b.avals[total.ins[0]].shape
            area = math.prod(shape[a] for a in total.params["axes"])
        else:
            return False
        return self.b.static[den].size == 1 and float(self.b.static[den]) == area

    def anchor_of(self, k: int) -> int:
        """The value at this map's layer boundary: its x operand, read back through structural ops."""
        (position,) = self.dep_positions(k)
        frontier = {self.b.ops[k].ins[position]}
        while True:
            back = set()
            for i in frontier:
                op = self.b.ops[self.producer[i]] if i in self.producer else None
                if op is None or op.name not in STRUCTURAL:
                    back.add(i)
                else:
                    back.update(j for j in op.ins if j in self.dep)
            if back == frontier:
                if len(frontier) != 1:
                    raise _refusal({self.b.ops[k].name: "a linear map whose input joins several layers"})
                return frontier.pop()
            frontier = back

    def _keeps_channels(self, before: int, after: int) -> bool:
        """Whether an op from value ``before`` to ``after`` keeps the last (channel) axis whole and in place."""
        shape_in, shape_out = self.b.avals[before].shape, self.b.avals[after].shape
        return len(shape_in) > 1 and len(shape_out) > 1 and shape_in[-1] == shape_out[-1]

    def linear_map(self, k: int, after_relu: dict[int, bool]) -> LinearMap:
        op = self.b.ops[k]
        (position,) = self.dep_positions(k)
        undefined = None
        if op.name == "conv_general_dilated" and any(d != 1 for d in op.params["lhs_dilation"]):
            undefined = "its convolution dilates the input (a transposed convolution)"
        scales, node = [], op.outs[0]
        while undefined is None:
            users = self.users.get(node, [])
            if len(users) != 1:
                break
            user = self.b.ops[users[0]]
            dep = self.dep_positions(users[0])
            if user.name in ("add", "add_any", "sub") and len(dep) == 2:
                undefined = "a residual sum (an add of two input-dependent values) comes before its ReLU"
            elif user.name in ("add", "sub", "convert_element_type", "copy", *MAX_POOLS):
                pass  # A shift; or a max pool, which a per-channel scale (BatchNorm after pooling) commutes with.
            elif user.name in ("slice", "reshape") and self._keeps_channels(node, user.outs[0]):
                pass  # Cropping or regrouping pixels (a max pool's windows), channels untouched.
            elif user.name in ("mul", "div") and len(dep) == 1 and (user.name == "mul" or dep == [0]):
                scales.append((user.name, user.ins[1 - dep[0]]))
            else:
                break
            node = user.outs[0]
        anchor = self.anchor_of(k)
        return LinearMap(k, 1 - position, anchor, after_relu.get(anchor, False), tuple(scales), undefined)


class _Refused(Exception):
    """A primitive on the path without a reverse rule: its name and why."""

    def __init__(self, name: str, why: str):
        super().__init__(name, why)
        self.name, self.why = name, why


def _refusal(refused: dict[str, str]) -> InputError:
    """One sentence naming every refused primitive (name -> why) and the ``plain_vjp`` that lets them pass."""
    control = [name for name in refused if name in ("scan", "while", "cond")]
    hint = " Control flow is not reversed; unroll it." if control else ""
    whys = "; ".join(refused.values())
    names = ", ".join(f"'{name}'" for name in refused)
    tuple_text = f"({names},)" if len(refused) == 1 else f"({names})"
    return InputError(
        f"Cannot run the net backwards through {names} on the path from the input to the source layer: {whys}.{hint} "
        f"Pass plain_vjp={tuple_text} to use {'its' if len(refused) == 1 else 'their'} plain VJP there."
    )


# -------------------------------------------------------------------- run --


class Options(Protocol):
    """The options the reverse pass reads: fields of ``generator.GeneratorConfig`` (which imports this module)."""

    rho: float
    alpha: Sequence[jax.Array | float] | str | None  # None: calibrated; "formula"; "data"; else one value per map
    alpha_scale: float
    input_relu: bool
    use_switches: bool


def run(
    graph: Graph, x: jax.Array, h: jax.Array | None, config: Options, key: jax.Array | None
) -> tuple[jax.Array, tuple]:
    """The reverse pass from ``h`` (default: the graph's own output at ``x``); returns it and each map's alpha.

    ``config.alpha`` is None, a mode, or one value per map (``generator.reverse`` expands a single number);
    ``key`` draws the sampling masks when ``config.rho < 1``.
    """
    vals = dict(graph.consts)
    vals[graph.input] = x
    for k in graph.live:
        vals.update(zip(graph.ops[k].outs, _bind(graph.ops[k], [vals[i] for i in graph.ops[k].ins])))
    signal = {graph.output: vals[graph.output] if h is None else h}
    keys = jax.random.split(key, len(graph.anchors)) if config.rho < 1.0 else None
    masks = {a: j for j, a in enumerate(graph.anchors)}
    map_index = {m.op: j for j, m in enumerate(graph.maps)}
    alphas = [None] * graph.num_maps

    def sample(i):
        if keys is not None and i in masks and i in signal:
            v = signal[i]
            signal[i] = jnp.where(jax.random.bernoulli(keys[masks[i]], config.rho, v.shape), v, 0.0)

    for k in reversed(graph.live):
        op = graph.ops[k]
        for o in op.outs:
            sample(o)
        if k not in graph.kinds or all(o not in signal for o in op.outs):
            continue
        kind = graph.kinds[k]
        if kind == "map":
            j = map_index[k]
            back, alphas[j] = _map_rule(graph, j, vals, signal[op.outs[0]], config)
        else:
            back = _RULES[kind](graph, k, vals, signal, config)
        for position, value in back.items():
            i = op.ins[position]
            signal[i] = value if i not in signal else signal[i] + value
    sample(graph.input)
    return signal.get(graph.input, jnp.zeros_like(x)), tuple(alphas)


def _dep_float_positions(graph: Graph, k: int, vals) -> list[int]:
    op = graph.ops[k]
    return [p for p, i in enumerate(op.ins) if i in graph.dep and jnp.issubdtype(vals[i].dtype, jnp.inexact)]


def _plain_vjp(graph: Graph, k: int, vals, signal, positions=None) -> dict[int, jax.Array]:
    op = graph.ops[k]
    args = [vals[i] for i in op.ins]
    positions = _dep_float_positions(graph, k, vals) if positions is None else positions

    def at(*moving):
        full = list(args)
        for p, value in zip(positions, moving):
            full[p] = value
        return _bind(op, full)

    outs, vjp = jax.vjp(at, *[args[p] for p in positions])
    cts = [signal[o] if o in signal else jnp.zeros_like(v) for o, v in zip(op.outs, outs)]
    return dict(zip(positions, vjp(cts)))


def _relu_rule(graph: Graph, k: int, vals, signal, config) -> dict[int, jax.Array]:
    return {graph.relu_operand[k]: jax.nn.relu(signal[graph.ops[k].outs[0]])}


def _max_pool_rule(graph: Graph, k: int, vals, signal, config) -> dict[int, jax.Array]:
    """Route to the first winner of each window (the switches), or copy over the window without switches."""
    op = graph.ops[k]
    u, g = vals[op.ins[0]], signal[op.outs[0]]
    if op.name == "reduce_window_max":
        if config.use_switches:
            return _plain_vjp(graph, k, vals, signal, [0])
        window = {name: op.params[name] for name in ("window_dimensions", "window_strides", "padding")}
        window |= {"base_dilation": op.params["base_dilation"], "window_dilation": op.params["window_dilation"]}
        _, vjp = jax.vjp(lambda v: lax.reduce_window(v, 0.0, lax.add, **window), u)
        return {0: vjp(g)[0]}
    axes = tuple(op.params["axes"])
    kept = tuple(d for d in range(u.ndim) if d not in axes)
    spread = lax.broadcast_in_dim(g, u.shape, kept)
    if not config.use_switches:
        return {0: spread}
    moved = jnp.moveaxis(u, axes, range(u.ndim - len(axes), u.ndim))
    flat = moved.reshape(*moved.shape[: u.ndim - len(axes)], -1)
    first = jax.nn.one_hot(jnp.argmax(flat, -1), flat.shape[-1], dtype=g.dtype).reshape(moved.shape)
    return {0: spread * jnp.moveaxis(first, range(u.ndim - len(axes), u.ndim), axes)}


def _mean_rule(graph: Graph, k: int, vals, signal, config) -> dict[int, jax.Array]:
    """A window mean reverses as a copy: the window sum's VJP copies, and the area factor is not applied."""
    return {0: signal[graph.ops[k].outs[0]]}


def _plain_rule(graph: Graph, k: int, vals, signal, config) -> dict[int, jax.Array]:
    return _plain_vjp(graph, k, vals, signal)


_RULES = {"plain": _plain_rule, "relu": _relu_rule, "max_pool": _max_pool_rule, "mean": _mean_rule,
          "none": lambda *args: {}}  # fmt: skip


def _map_rule(graph: Graph, j: int, vals, g: jax.Array, config: Options):
    """``alpha * A^T g`` for linear map ``j`` (input side first), with the map's alpha."""
    m = graph.maps[j]
    op = graph.ops[m.op]
    x_position = 1 - m.weight_operand
    (back,) = _plain_vjp(graph, m.op, vals, {op.outs[0]: g}, [x_position]).values()
    relu = m.after_relu or config.input_relu
    if config.alpha is None or config.alpha == "formula":
        alpha = calibrated_alpha(graph, j, vals, config.rho, relu, strict=config.alpha is None)
    elif config.alpha == "data":
        alpha = _data_alpha(op, vals, g, back, x_position, config.rho, relu)
    else:
        alpha = config.alpha[j]
    alpha = config.alpha_scale * alpha
    return {x_position: alpha * back}, alpha


def calibrated_alpha(graph: Graph, j: int, vals, rho: float, relu: bool, strict: bool = True) -> jax.Array:
    """``c / (rho * fan_in * mean(W^2))`` of map ``j``, any per-channel scales before its ReLU folded into W.

    ``strict`` refuses maps where the formula's guarantee does not hold; otherwise it is applied there too.
    """
    m = graph.maps[j]
    op = graph.ops[m.op]
    if m.undefined and strict:
        raise InputError(
            f"The calibrated alpha of linear map {j + 1} ({op.name}) is undefined: {m.undefined}; "
            "pass alpha='formula' (the formula without its guarantee), 'data' (fitted on a batch) "
            "or one number per map."
        )
    w = vals[op.ins[m.weight_operand]]
    fan_in, feature_axis = _fan_in(op, m.weight_operand, w.shape)
    w2 = jnp.square(w)
    for kind, i in m.scales:
        s2 = jnp.square(jnp.asarray(vals[i], w.dtype)).reshape(-1)
        if s2.size != 1 and (feature_axis is None or s2.size != w.shape[feature_axis]):
            raise InputError(
                f"A scale of shape {np.shape(vals[i])} after linear map {j + 1} is not per output "
                "channel, so it cannot be folded into the calibrated alpha; pass alpha='data' or numbers."
            )
        if s2.size != 1:
            s2 = s2.reshape([-1 if d == feature_axis else 1 for d in range(w.ndim)])
        w2 = w2 * s2 if kind == "mul" else w2 / s2
    return (2.0 if relu else 1.0) / (rho * fan_in * jnp.mean(w2))


def _fan_in(op: Op, weight_operand: int, shape: Sequence[int]) -> tuple[int, int | None]:
    """Terms in one output's sum, and the weight's output-channel axis when it is the output's last axis."""
    if op.name == "dot_general":
        (lhs_c, rhs_c), (lhs_b, rhs_b) = op.params["dimension_numbers"]
        contracting, batch = (rhs_c, rhs_b) if weight_operand == 1 else (lhs_c, lhs_b)
        free = [d for d in range(len(shape)) if d not in contracting and d not in batch]
        feature_axis = free[-1] if weight_operand == 1 and free else None
        return math.prod(shape[d] for d in contracting), feature_axis
    dn = op.params["dimension_numbers"]
    feature_axis = dn.rhs_spec[0] if dn.out_spec[1] == len(dn.out_spec) - 1 else None
    return shape[dn.rhs_spec[1]] * math.prod(shape[d] for d in dn.rhs_spec[2:]), feature_axis


def _data_alpha(op: Op, vals, g, back, x_position: int, rho: float, relu: bool) -> jax.Array:
    """The alpha for which this map's round trip gives back its signal on the signal's support, on average."""
    below = jax.nn.relu(back) if relu else back
    args = [vals[i] for i in op.ins]
    args[x_position] = below
    (again,) = _bind(op, args)
    support = g > 0
    returned = rho * jnp.sum(jnp.where(support, again, 0.0))
    # No support (or none of it returned): every alpha gives the same twin, so 1 keeps it finite.
    return jnp.where(returned > 0, jnp.sum(jnp.where(support, g, 0.0)) / jnp.where(returned > 0, returned, 1.0), 1.0)
