"""The generator layer by layer, as the project wrote it before ``generator.reverse``.

The oracle that the one transformation of the traced net must reproduce on
the built-in nets: unpool (switches or copy), ``A^T`` from
``jax.linear_transpose``, the calibrated alpha, ReLU above the input, and a
Bernoulli(rho) mask per layer with the keys ``split(key, layer)``.
"""

import jax
import jax.numpy as jnp

from rev_nets import generator, nets
from rev_nets import layers as L


def unpool(layer, h, switches=None):
    """Each pooled value back at its window's switch, or copied over its window (average pooling, no switches)."""
    if layer.pool is None:
        return h
    p = layer.pool_size
    if switches is None or layer.pool == "avg":
        spread = jnp.broadcast_to(h[..., None], (*h.shape, p * p))
    else:
        spread = h[..., None] * jax.nn.one_hot(switches, p * p, dtype=h.dtype)
    b, hp, wp, c, _ = spread.shape
    return spread.reshape(b, hp, wp, c, p, p).transpose(0, 1, 4, 2, 5, 3).reshape(b, hp * p, wp * p, c)


def adjoint(layer, w, y, in_shape):
    """``A^T y`` from ``jax.linear_transpose`` of the layer's linear map."""
    primal = jax.ShapeDtypeStruct((y.shape[0], *in_shape), y.dtype)
    (x,) = jax.linear_transpose(lambda h: L.linear(layer, w, h), primal)(y)
    return x


def calibrated_alpha(layer, w, in_shape, rho, relu):
    """``c / (rho * fan_in * mean(w^2))``."""
    return (2.0 if relu else 1.0) / (rho * L.fan_in(layer, in_shape) * jnp.mean(jnp.square(w)))


def generate(net, params, hiddens, layer, *, key=None, rho=1.0, alpha=None, alpha_scale=1.0,
             input_relu=False, smooth_sigma=0.0, use_switches=True):  # fmt: skip
    """From ``hiddens[layer - 1].h`` down to the input, one layer at a time."""
    shapes = nets.layer_shapes(net)
    keys = jax.random.split(key, layer) if key is not None else [None] * layer
    x = hiddens[layer - 1].h
    for l in range(layer, 0, -1):
        spec, w = net.layers[l - 1], params["hidden"][l - 1]["w"]
        relu = l > 1 or input_relu
        a = calibrated_alpha(spec, w, shapes[l - 1], rho, relu) if alpha is None else alpha[l - 1]
        switches = hiddens[l - 1].switches if use_switches else None
        x = alpha_scale * a * adjoint(spec, w, unpool(spec, x, switches), shapes[l - 1])
        x = jax.nn.relu(x) if relu else x
        if rho < 1.0:
            x = jnp.where(jax.random.bernoulli(keys[l - 1], rho, x.shape), x, 0.0)
    return generator.gaussian_blur(x, smooth_sigma) if smooth_sigma > 0 else x
