"""``generator.reverse`` on any traced JAX function: rules against jax.vjp, linear_transpose and numpy, refusals."""

import ast
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
from flax import nnx
from jax import lax

from rev_nets import generator, layers, transposition
from rev_nets.nnx_zoo import ResidualCNN

jax.config.update("jax_default_matmul_precision", "highest")

RNG = np.random.default_rng(0)
W1, W2 = (RNG.standard_normal(s).astype(np.float32) for s in ((12, 8), (8, 6)))
B1 = RNG.standard_normal(8).astype(np.float32)
X = RNG.standard_normal((5, 12)).astype(np.float32)


def _numpy_mlp_reverse(x):
    """Two dense layers from h2 back to the input: calibrated alphas, ReLU on the hidden layer only."""
    h2 = np.maximum(np.maximum(x @ W1 + B1, 0) @ W2, 0)
    g = np.maximum(2.0 / (8 * np.mean(W2**2)) * h2 @ W2.T, 0)
    return 1.0 / (12 * np.mean(W1**2)) * g @ W1.T


RELUS = {
    "jax.nn.relu": jax.nn.relu,
    "nnx.relu": nnx.relu,
    "jnp.maximum": lambda z: jnp.maximum(z, 0),
    "lax.max": lambda z: lax.max(z, 0.0),
    "jnp.where": lambda z: jnp.where(z > 0, z, 0),
    "jnp.where_reversed_test": lambda z: jnp.where(0 < z, z, 0.0),
}


@pytest.mark.parametrize("spelling", list(RELUS))
def test_every_relu_spelling_is_recognised(spelling):
    relu = RELUS[spelling]
    features = lambda x: relu(relu(x @ W1 + B1) @ W2)
    np.testing.assert_allclose(generator.reverse(features, X), _numpy_mlp_reverse(X), rtol=1e-5, atol=1e-6)


def _custom_jvp_relu():
    @jax.custom_jvp
    def relu(z):
        return jnp.maximum(z, 0.0)

    relu.defjvp(lambda primals, tangents: (relu(primals[0]), tangents[0] * (primals[0] > 0)))
    return relu


def _custom_vjp_relu():
    @jax.custom_vjp
    def relu(z):
        return jnp.maximum(z, 0.0)

    relu.defvjp(lambda z: (relu(z), z), lambda z, g: (g * (z > 0),))
    return relu


WRAPPERS = {
    "jit": lambda f: jax.jit(f),
    "remat": lambda f: jax.checkpoint(f),
    "custom_jvp": lambda f: lambda x: f(x, _custom_jvp_relu()),
    "custom_vjp": lambda f: lambda x: f(x, _custom_vjp_relu()),
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_it_recurses_into_jit_remat_and_custom_derivatives(wrapper):
    def mlp(x, relu=jax.nn.relu):
        return relu(jax.jit(lambda v: relu(v @ W1 + B1))(x) @ W2)

    features = WRAPPERS[wrapper](mlp)
    np.testing.assert_allclose(generator.reverse(features, X), _numpy_mlp_reverse(X), rtol=1e-5, atol=1e-6)


def _residual_body(params, relu=jax.nn.relu):
    """conv -> ReLU -> residual block -> average pool -> conv -> ReLU, NHWC (before the last, max pooling)."""
    conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def body(x):
        h = relu(conv(x, params[0]) + 0.1)
        h = relu(h + conv(relu(conv(h, params[1])), params[2]))
        return relu(conv(nn.avg_pool(h, (2, 2), strides=(2, 2)), params[3]))

    return body


def _residual_net(params):
    body = _residual_body(params)
    return lambda x: nnx.max_pool(body(x), (2, 2), strides=(2, 2))


def _residual_params():
    keys = jax.random.split(jax.random.key(3), 4)
    shapes = ((3, 3, 2, 4), (3, 3, 4, 4), (3, 3, 4, 4), (3, 3, 4, 5))
    return [0.3 * jax.random.normal(k, s) for k, s in zip(keys, shapes)]


def _windows(z):
    b, hh, ww, c = z.shape
    return z.reshape(b, hh // 2, 2, ww // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, hh // 2, ww // 2, c, 4)


def test_the_plain_rule_is_jax_vjp():
    features = _residual_net(_residual_params())
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 2))
    ct = jax.random.normal(jax.random.key(5), features(x).shape)
    plain = ("max", "reduce_window_max", "div")
    ours = generator.reverse(features, x, h=ct, alpha=1.0, plain_vjp=plain)
    np.testing.assert_allclose(ours, jax.vjp(features, x)[1](ct)[0], rtol=1e-5, atol=1e-6)


def test_the_identity_rule_is_the_transpose_of_the_net_without_relus(monkeypatch):
    """With ReLU's rule the identity, the reverse is ``linear_transpose`` of the ReLU- and bias-free net
    (its max pooling frozen at the forward's first winners, average pooling's VJP kept by ``plain_vjp``)."""
    params = _residual_params()
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 2))
    winners = jax.nn.one_hot(jnp.argmax(_windows(_residual_body(params)(x)), -1), 4)
    no_relu = _residual_body(params, relu=lambda z: z)
    linear = lambda v: jnp.sum(_windows(no_relu(v) - no_relu(jnp.zeros_like(v))) * winners, -1)
    ct = jax.random.normal(jax.random.key(5), linear(x).shape)
    identity = lambda graph, k, vals, signal, settings: {graph.relu_operand[k]: signal[graph.ops[k].outs[0]]}
    monkeypatch.setitem(transposition._RULES, "relu", identity)
    ours = generator.reverse(_residual_net(params), x, h=ct, alpha=1.0, plain_vjp=("div",))
    (expected,) = jax.linear_transpose(linear, x)(ct)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_a_linen_model_matches_a_numpy_reverse():
    """Dense after conv and average pooling, in linen: calibrated alphas, the copy rule, the flatten's order."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.avg_pool(nn.relu(nn.Conv(3, (3, 3))(x)), (2, 2), strides=(2, 2))
            return nn.relu(nn.Dense(5)(h.reshape(h.shape[0], -1)))

    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
    variables = Net().init(jax.random.key(1), x)
    x_syn = generator.reverse(lambda v: Net().apply(variables, v), x)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    wc, bc, wd, bd = p["Conv_0"]["kernel"], p["Conv_0"]["bias"], p["Dense_0"]["kernel"], p["Dense_0"]["bias"]
    pads = (oracles.same_pads(6, 3, 1),) * 2
    z = np.maximum(oracles.conv(np.asarray(x, np.float64), wc, (1, 1), pads) + bc, 0)
    h = oracles.avg_pool(z, 2)
    top = np.maximum(h.reshape(2, -1) @ wd + bd, 0)
    g = np.maximum(2.0 / (wd.shape[0] * np.mean(wd**2)) * top @ wd.T, 0).reshape(h.shape)
    g = np.repeat(np.repeat(g, 2, axis=1), 2, axis=2)  # Average pooling reverses by copying.
    expected = 1.0 / (9 * 2 * np.mean(wc**2)) * oracles.conv_transpose(g, wc, (6, 6), (1, 1), pads)
    np.testing.assert_allclose(x_syn, expected, rtol=1e-4, atol=1e-5)


def test_an_nnx_residual_model_matches_a_numpy_reverse():
    model = ResidualCNN((2, 3), 4, (8, 8, 3), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    alpha = (0.7, 0.5, 0.4, 0.6, 0.3, 0.8)  # stem, block first, block second; per stage
    x_syn = generator.reverse(lambda v: model.features(v, 2), x, alpha=alpha)

    f64 = lambda a: np.asarray(a, np.float64)
    pads = (oracles.same_pads(8, 3, 1),) * 2
    conv = lambda v, c: oracles.conv(v, f64(c.kernel[...]), (1, 1), pads) + f64(c.bias[...])
    conv_t = lambda g, c, hw: oracles.conv_transpose(g, f64(c.kernel[...]), hw, (1, 1), pads)
    acts, pre_pool = [f64(x)], []
    for stem, block in zip(model.stems, model.blocks):
        s = np.maximum(conv(acts[-1], stem), 0)
        r = np.maximum(s + conv(np.maximum(conv(s, block.first), 0), block.second), 0)
        pre_pool.append((s, block.first, r))
        acts.append(oracles.max_pool(r, 2))
    g = acts[2]
    for stage in (1, 0):
        stem, block = model.stems[stage], model.blocks[stage]
        s, _, r = pre_pool[stage]
        a_stem, a_first, a_second = alpha[3 * stage : 3 * stage + 3]
        hw = s.shape[1:3]
        t = oracles.max_unpool(g, r, 2)  # the block's ReLU passes the non-negative signal
        branch = np.maximum(a_second * conv_t(t, block.second, hw), 0)
        t = t + a_first * conv_t(branch, block.first, hw)
        t = np.maximum(t, 0)  # the stem's ReLU
        g = a_stem * conv_t(t, stem, hw)
        g = np.maximum(g, 0) if stage else g
    np.testing.assert_allclose(x_syn, g, rtol=1e-4, atol=1e-5)


def test_per_channel_scales_fold_into_the_calibrated_alpha():
    """An inference-mode BatchNorm after a conv scales each channel: its alpha is that of W times the scales."""
    conv = nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))
    norm = nnx.BatchNorm(4, use_running_average=True, rngs=nnx.Rngs(1))
    norm.mean[...] = jnp.linspace(-0.5, 0.5, 4)
    norm.var[...] = jnp.linspace(0.5, 2.0, 4)
    norm.scale[...] = jnp.linspace(0.5, 1.5, 4)
    x = jnp.zeros((2, 6, 6, 3))
    (alpha,) = generator.alphas(lambda v: nnx.relu(norm(conv(v))), x)
    s = norm.scale[...] / jnp.sqrt(norm.var[...] + norm.epsilon)
    np.testing.assert_allclose(alpha, 1.0 / (27 * jnp.mean((conv.kernel[...] * s) ** 2)), rtol=1e-5)
    (pooled,) = generator.alphas(lambda v: nnx.relu(norm(layers.max_pool(conv(v), 2))), x)
    np.testing.assert_allclose(pooled, alpha, rtol=1e-6)  # A crop and reshape of pixels keep the channels.
    mixed = lambda v: nnx.relu(norm(conv(v).reshape(2, 6, 3, 8)[..., :4]))  # Channels regrouped: not folded.
    assert not np.isclose(generator.alphas(mixed, x)[0], alpha, rtol=1e-3)


def test_the_data_alpha_gives_back_the_signal_on_its_support_on_average():
    features = lambda x: jax.nn.relu(jax.nn.relu(x @ W1 + B1) @ W2)
    (_, top) = generator.alphas(features, jnp.asarray(X), alpha="data")
    h = features(X)
    below = jax.nn.relu(top * h @ W2.T)
    support = h > 0
    np.testing.assert_allclose(jnp.sum((below @ W2)[support]), jnp.sum(h[support]), rtol=1e-5)


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree_on_an_nnx_model(self):
        model = ResidualCNN((2, 3), 4, (8, 8, 3), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))

        @self.variant
        def twins(state, x, key):
            features = lambda v: nnx.merge(graphdef, state).features(v, 2)
            return generator.reverse(features, x, alpha="data", rho=0.7, key=key)

        out = twins(state, x, jax.random.key(2))
        reference = generator.reverse(lambda v: model.features(v, 2), x, alpha="data", rho=0.7, key=jax.random.key(2))
        # float32 rounding at the output's scale (up to ~180 here, through fitted alphas up to ~37): jit fuses and
        # orders the sums differently, and values near zero come from cancelling terms of that size.
        scale = float(jnp.abs(reference).max())
        chex.assert_trees_all_close(out, reference, rtol=1e-5, atol=2e-6 * scale)


def test_one_trace_and_batching_over_a_leading_axis():
    features = lambda x: jax.nn.relu(jax.nn.relu(x @ W1 + B1) @ W2)

    def twins(x):
        return generator.reverse(features, x)

    once = jax.jit(chex.assert_max_traces(twins, n=1))
    for seed in range(3):
        once(jax.random.normal(jax.random.key(seed), X.shape))
    stacked = jnp.stack([X, 2 * X])
    mapped = jax.vmap(lambda x: generator.reverse(features, x))(stacked)
    np.testing.assert_allclose(mapped[1], generator.reverse(features, 2 * X), rtol=1e-5, atol=1e-6)


REFUSED = {
    "tanh": (lambda x: jnp.tanh(x @ W1), "tanh"),
    "gelu": (lambda x: jax.nn.gelu(x @ W1), "erf|tanh|pow|integer_pow|mul"),
    "softmax": (lambda x: jax.nn.softmax(x @ W1), "max|exp|sub"),
    "scan": (lambda x: lax.scan(lambda c, _: (jax.nn.relu(c), None), x, None, length=2)[0], "scan"),
    "while": (
        lambda x: lax.while_loop(lambda c: c[1] < 2, lambda c: (jax.nn.relu(c[0]), c[1] + 1), (x, 0))[0],
        "while",
    ),
    "cond": (lambda x: lax.cond(True, jax.nn.relu, jnp.abs, x), "cond"),
    "sin": (lambda x: jnp.sin(x), "sin"),
    "attention": (lambda x: x @ x.T, "dot_general"),
    "gate": (lambda x: x * jax.nn.relu(x), "mul"),
    "maxout": (lambda x: jnp.maximum(x @ W1, x @ W1 + 1.0), "max"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unknown_primitives_on_the_path_are_refused_at_trace_time(name):
    features, primitive = REFUSED[name]
    spec = jax.ShapeDtypeStruct(X.shape, X.dtype)
    with pytest.raises(
        ValueError, match=rf"through '({primitive})'(, '\w+')* on the path from the input.*plain_vjp="
    ) as error:
        jax.eval_shape(lambda x: generator.reverse(features, x), spec)  # Abstract: nothing is computed.
    assert str(error.value).count(". ") <= 2


def test_one_refusal_names_every_primitive_on_the_path_and_the_plain_vjp_it_offers_runs():
    features = lambda x: jax.nn.relu(jax.nn.gelu(x @ W1, approximate=True) @ W2)
    with pytest.raises(ValueError, match=r"through ('\w+'(, )?){3} on the path") as error:
        generator.reverse(features, X)
    offered = ast.literal_eval(re.search(r"plain_vjp=(\(.*?\)) to use their", str(error.value)).group(1))
    assert set(offered) == {"integer_pow", "mul", "tanh"}
    assert generator.reverse(features, X, plain_vjp=offered).shape == X.shape


def test_primitives_off_the_path_are_not_refused():
    """tanh of the weights, and a softmax of the logits that ``features`` does not return, are not on the path."""
    features = lambda x: jax.nn.relu(x @ jnp.tanh(W1))
    np.testing.assert_allclose(
        generator.reverse(features, X), 1.0 / (12 * jnp.mean(jnp.tanh(W1) ** 2)) * features(X) @ jnp.tanh(W1).T,
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip


def test_a_primitive_can_be_opted_into_its_plain_vjp():
    features = lambda x: jax.nn.relu(jnp.tanh(x) @ W1)
    x_syn = generator.reverse(features, X, plain_vjp=("tanh",))
    back = 1.0 / (12 * np.mean(W1**2)) * features(X) @ W1.T
    np.testing.assert_allclose(x_syn, back * (1 - jnp.tanh(X) ** 2), rtol=1e-5, atol=1e-6)


def test_undefined_calibrated_alphas_name_the_map_and_the_fix():
    model = ResidualCNN((2,), 4, (8, 8, 3), rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"linear map 3 \(conv_general_dilated\) is undefined: a residual sum.*alpha='formula'"
    ):
        generator.reverse(lambda v: model.features(v, 1), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="transposed convolution"):
        w = jnp.ones((3, 3, 2, 2))
        dilated = lambda v: jax.nn.relu(
            lax.conv_transpose(v, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        )
        generator.reverse(dilated, jnp.zeros((1, 4, 4, 2)))


def test_features_must_map_one_array_to_one_that_depends_on_it():
    with pytest.raises(ValueError, match="one array"):
        generator.reverse(lambda x: (x, x), X)
    with pytest.raises(ValueError, match="does not depend on its input"):
        generator.reverse(lambda x: jnp.ones(3), X)


def test_the_formula_setting_applies_the_calibrated_formula_to_every_map():
    model = ResidualCNN((2, 3), 4, (8, 8, 3), rngs=nnx.Rngs(0))
    read = generator.alphas(lambda v: model.features(v, 2), jnp.zeros((1, 8, 8, 3)), alpha="formula", rho=0.5)
    kernels = [
        c.kernel[...] for stem, block in zip(model.stems, model.blocks) for c in (stem, block.first, block.second)
    ]
    expected = [(1.0 if i == 0 else 2.0) / (0.5 * np.prod(w.shape[:3]) * jnp.mean(w**2)) for i, w in enumerate(kernels)]
    np.testing.assert_allclose(read, expected, rtol=1e-6)
