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
the backward signal (``transposition``); its options (rho, alpha, smoothing,
switches, ...) are one record, ``GeneratorConfig``. ``twins`` applies it to
any ``Model``: the synthetic twins of a batch, or of a source layer alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import numbers
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from rev_nets import models, transposition
from rev_nets.errors import InputError, SettingError

Alpha = float | tuple[float | jax.Array, ...] | jax.Array | str | None
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


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """The generator's options: one record that ``reverse``, SHADOW, consistency and evaluation share.

    Checked on construction (``SettingError`` naming the field); frozen and
    hashable, so it can be a static argument of ``jit``.

    Attributes:
      rho: keep-probability of the Bernoulli masks at each map's input (1 = off).
      alpha: ``None`` for each map's calibrated alpha, read from the traced
        weights (refused where its guarantee fails: a residual sum before the
        ReLU, a transposed convolution); ``"formula"`` for the same formula on
        every map, guarantee or not; ``"data"`` to fit each map's alpha on the
        batch (so that its round trip gives back its signal on the signal's
        support, on average; ``alphas`` returns the values, to freeze); a
        number for every map; or one number per linear map, input side first
        (arrays too, e.g. frozen fitted alphas under ``jit``: not checked).
      alpha_scale: multiplies every alpha (a twin through l linear maps
        scales by ``alpha_scale ** l``).
      smooth_sigma: Gaussian blur (in pixels) of generated NHWC images; 0 = off.
      use_switches: reverse max pooling through the switches of the real
        input's forward pass; ``False`` copies each value over its window.
      input_relu: apply the ReLU to the generated input too.
      plain_vjp: primitive names that take their plain VJP instead of being refused.
    """

    rho: float = 1.0
    alpha: Alpha = None
    alpha_scale: float = 1.0
    smooth_sigma: float = 0.0
    use_switches: bool = True
    input_relu: bool = False
    plain_vjp: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.alpha, list):  # Per-map alphas read from JSON: a tuple, so the record stays hashable.
            object.__setattr__(self, "alpha", tuple(self.alpha))
        if isinstance(self.plain_vjp, list):
            object.__setattr__(self, "plain_vjp", tuple(self.plain_vjp))
        _check_config(self)


OPTIONS = tuple(field.name for field in dataclasses.fields(GeneratorConfig))


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive(alpha) -> bool:
    """A positive finite number or array of them; a traced array passes (its values are not known here)."""
    if isinstance(alpha, jax.core.Tracer):
        return True
    if isinstance(alpha, (jax.Array, np.ndarray)):
        values = np.asarray(alpha)
        return values.dtype.kind in "iuf" and bool(np.all(np.isfinite(values) & (values > 0)))
    return _real(alpha) and math.isfinite(alpha) and alpha > 0


def _alpha_ok(alpha: Alpha) -> bool:
    if alpha is None or isinstance(alpha, str):
        return alpha is None or alpha in ALPHA_MODES
    return all(map(_positive, alpha)) if isinstance(alpha, tuple) else _positive(alpha)


def _check_config(config: GeneratorConfig) -> None:
    """Raises ``SettingError`` naming the first field whose value makes no sense (NaN and infinities included)."""
    if not (_real(config.rho) and 0 < config.rho <= 1):
        raise SettingError("rho", f"must be in (0, 1] (1 = no sampling), got {config.rho}.")
    if not _alpha_ok(config.alpha):
        raise SettingError(
            "alpha",
            "must be None (calibrated), 'formula', 'data', a positive number or one positive number per linear map, "
            f"got {config.alpha!r}.",
        )
    if not (_real(config.alpha_scale) and math.isfinite(config.alpha_scale) and config.alpha_scale > 0):
        raise SettingError(
            "alpha_scale",
            f"must be positive and finite (1 = the alpha as given or calibrated), got {config.alpha_scale}.",
        )
    if not (_real(config.smooth_sigma) and math.isfinite(config.smooth_sigma) and config.smooth_sigma >= 0):
        raise SettingError("smooth_sigma", f"must be >= 0 and finite (0 = no smoothing), got {config.smooth_sigma}.")
    for name in ("use_switches", "input_relu"):
        if not isinstance(getattr(config, name), (bool, np.bool_)):
            raise SettingError(name, f"must be True or False, got {getattr(config, name)!r}.")
    if not (
        isinstance(config.plain_vjp, tuple) and all(isinstance(p, str) and p.isidentifier() for p in config.plain_vjp)
    ):
        raise SettingError("plain_vjp", f"must be a tuple of primitive names ('tanh', ...), got {config.plain_vjp!r}.")


def configured(config: GeneratorConfig | None, options: dict[str, Any]) -> GeneratorConfig:
    """``config`` (default: ``GeneratorConfig()``) with ``options`` replacing its fields."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(
            f"Unknown generator option {', '.join(map(repr, unknown))}; the options are h, key, config and "
            f"{', '.join(OPTIONS)}."
        )
    config = GeneratorConfig() if config is None else config
    return dataclasses.replace(config, **options) if options else config


def _map_alphas(alpha: Alpha, num_maps: int) -> Alpha:
    if alpha is None or isinstance(alpha, str):
        return alpha
    if not isinstance(alpha, tuple) and jnp.ndim(alpha) == 0:
        return (alpha,) * num_maps
    if len(alpha) != num_maps:
        raise SettingError(
            "alpha",
            f"has {len(alpha)} entries but {num_maps} linear maps lie between the input and the source layer; "
            "give one per map or a single number.",
        )
    return tuple(alpha)


def _check_call(x, key: jax.Array | None, config: GeneratorConfig) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise InputError(
            f"x has dtype {jnp.result_type(x)}, but the net runs backwards in floating point; convert it first, "
            "e.g. x.astype(jnp.float32) (standardised as the net was trained)."
        )
    if jnp.size(x) == 0:
        raise InputError(f"x holds no examples (shape {jnp.shape(x)}); pass a batch of at least one.")
    if config.rho < 1 and key is None:
        raise InputError("Sampling (rho < 1) needs a PRNG key; pass key=jax.random.key(seed).")


def _modules_called(function, depth: int = 0) -> list[nnx.Module]:
    """The NNX modules ``function`` reaches: a bound method's module, and those its closure, globals or partial
    arguments hold, directly or in a dict, list, tuple or plain object's attributes (two levels deep)."""
    if isinstance(function, nnx.Module):
        return [function]
    if depth > 2 or isinstance(function, (type, types.ModuleType)):
        return []
    if isinstance(function, functools.partial):
        inner = [function.func, *function.args, *function.keywords.values()]
    elif inspect.ismethod(function):
        inner = [function.__self__]
    elif inspect.isfunction(function):
        held = inspect.getclosurevars(function)
        inner = [*held.nonlocals.values(), *held.globals.values()]
    elif isinstance(function, dict):
        inner = list(function.values())
    elif isinstance(function, (list, tuple)):
        inner = list(function)
    elif hasattr(function, "__dict__") and not callable(function):
        inner = list(vars(function).values())
    else:
        return []
    return [module for value in inner for module in _modules_called(value, depth + 1)]


@contextlib.contextmanager
def _at_batch_statistics(features, x):
    """While the generator runs ``features``: every ``nnx.BatchNorm`` it calls in training mode normalises by x's
    batch statistics held constant (read exactly, by one forward at x with momentum 0), as the forward did; after,
    each has its running statistics, momentum and mode back, and the modules their RNG streams (that forward's
    dropout draws are undone)."""
    modules = _modules_called(features)
    norms = [
        layer
        for module in modules
        for _, layer in nnx.iter_modules(module)
        if isinstance(layer, nnx.BatchNorm) and layer.use_running_average is False
    ]
    if not norms:
        yield
        return
    if isinstance(x, jax.core.Tracer):
        raise InputError(
            "features calls an NNX module in training mode (BatchNorm on batch statistics) under a JAX "
            "transformation, where flax forbids changing its state; call reverse outside jit, put the module in "
            "evaluation mode (module.eval()), or reverse a models.nnx_model, whose params carry the statistics."
        )
    saved = [(norm, norm.mean[...], norm.var[...], norm.momentum) for norm in norms]
    streams = [(module, jax.tree.map(lambda a: a, nnx.state(module, nnx.RngState))) for module in modules]
    try:
        for norm in norms:
            norm.momentum = 0.0
        features(x)
        for norm in norms:
            norm.use_running_average = True
        yield
    finally:
        for norm, mean, var, momentum in saved:
            norm.mean[...], norm.var[...] = mean, var
            norm.momentum, norm.use_running_average = momentum, False
        for module, state in streams:
            nnx.update(module, state)


def _reverse(features, x, h, key, config: GeneratorConfig):
    _check_call(x, key, config)
    with _at_batch_statistics(features, x):
        return _reverse_traced(features, x, h, key, config)


def _reverse_traced(features, x, h, key, config: GeneratorConfig):
    graph = transposition.trace(features, x, config.plain_vjp)
    if h is not None and (h.shape != graph.out_shape or h.dtype != graph.out_dtype):
        raise InputError(
            f"h has shape {h.shape} and dtype {h.dtype} but features gives {graph.out_shape} {graph.out_dtype}; "
            "pass the source layer of this batch."
        )
    per_map = dataclasses.replace(config, alpha=_map_alphas(config.alpha, graph.num_maps))
    x_syn, alphas = transposition.run(graph, x, h, per_map, key)
    if config.input_relu:
        x_syn = jax.nn.relu(x_syn)
    if config.smooth_sigma > 0:
        x_syn = gaussian_blur(x_syn, config.smooth_sigma)
    return x_syn.astype(x.dtype), alphas


def reverse(
    features: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    *,
    h: jax.Array | None = None,
    key: jax.Array | None = None,
    config: GeneratorConfig | None = None,
    **options,
) -> jax.Array:
    """Synthetic twins of the batch ``x``: ``features`` run backwards from its output at ``x``.

    Args:
      features: any JAX function from a batch to the source hidden layer
        (``lambda x: model.apply(variables, x)``, a Flax NNX method, ...), made
        of linear maps, ReLUs, max or average pooling and structural ops.
      x: the real batch (floating point). Its forward values give the
        max-pooling switches; a batch of zeros with ``use_switches=False``
        generates from ``h`` alone.
      h: the source layer to generate from (default: ``features(x)``).
      key: PRNG key of the sampling masks; needed only when ``rho < 1``.
      config: the generator's options (default: ``GeneratorConfig()``).
      **options: fields of ``GeneratorConfig`` (``rho=0.7, alpha="data"``, ...),
        replacing those of ``config``.

    Returns:
      A batch with ``x``'s shape and dtype. Pure: no retrace under ``jit``, and
      it works under ``vmap`` and with sharded inputs.
    """
    return _reverse(features, x, h, key, configured(config, options))[0]


def alphas(
    features: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    config: GeneratorConfig | None = None,
    *,
    h: jax.Array | None = None,
    key: jax.Array | None = None,
    **options,
) -> tuple[jax.Array, ...]:
    """The alpha of each linear map (input side first) that ``reverse`` uses with the same arguments.

    With ``alpha="data"``, the values fitted on ``x``: freeze them (pass them
    back as ``alpha``) so that the fit does not cost every call. The sampling
    key defaults to a fixed one: calibrated alphas do not depend on it.
    """
    key = jax.random.key(0) if key is None else key
    return _reverse(features, x, h, key, configured(config, options))[1]


# -------------------------------------------------------------- models --


def _check_layer(model: models.Model, layer: int) -> None:
    if not 1 <= layer <= model.depth:
        raise InputError(f"Generator source layer must be in 1..{model.depth} for this model, got {layer}.")


def twins(model: models.Model, params, x: jax.Array | None, layer: int, **settings) -> jax.Array:
    """The synthetic twins of the batch ``x`` from hidden layer ``layer`` (1-based): ``reverse`` of ``model.features``.

    ``settings`` are ``reverse``'s (``h``, ``key``, ``config``, options; ``h``
    overrides the source layer, e.g. the one a forward pass with dropout
    recorded). A ``Net`` has one linear map per hidden layer, so a per-map
    ``alpha`` holds one number per layer 1..``layer``. ``x=None`` generates
    from ``h`` alone, with no real input: the model is linearised at a batch
    of zeros, and max pooling reverses by copying each value over its window
    (there are no switches to read).
    """
    _check_layer(model, layer)
    if x is None:
        x, settings = _no_input(model, settings)
    return reverse(lambda v: model.features(params, v, layer), x, **settings)


def _no_input(model: models.Model, settings: dict) -> tuple[jax.Array, dict]:
    """The batch of zeros ``twins`` linearises at without a real input, and its settings (no switches)."""
    h = settings.get("h")
    if h is None:
        raise InputError("twins without a real input x generate from h: pass h=<a batch of the source layer>.")
    if settings.get("use_switches"):
        raise InputError("twins without a real input have no pooling switches: drop use_switches (values are copied).")
    return jnp.zeros((h.shape[0], *model.input_shape), h.dtype), settings | {"use_switches": False}


def twins_by_layer(model: models.Model, params, x: jax.Array, **settings) -> dict[str, jax.Array]:
    """``x`` and its synthetic twins ``G(h_l)`` from every hidden layer ``l``, for image grids.

    ``settings`` are ``twins``' keyword settings, shared by every layer.
    """
    rows = {f"from h{l}": twins(model, params, x, l, **settings) for l in range(1, model.depth + 1)}
    return {"real": x} | rows
