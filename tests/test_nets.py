"""Net descriptions, init and forward."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest

from rev_nets import nets


def test_default_parameter_counts_are_pinned():
    # 784*1024+1024 + 2*(1024*1024+1024) + 1024*10+10
    assert nets.param_count(nets.init(jax.random.key(0), nets.mnist_mlp())) == 2_913_290
    # (27*64+64) + (576*128+128) + (1152*256+256) + (4096*10+10)
    assert nets.param_count(nets.init(jax.random.key(0), nets.cifar_cnn())) == 411_786
    assert nets.param_count(nets.init(jax.random.key(0), nets.cifar_cnn(num_classes=100))) == 411_786 + 4096 * 90 + 90


def test_default_nets_have_three_hidden_layers_and_expected_shapes():
    assert nets.layer_shapes(nets.mnist_mlp()) == ((28, 28, 1), (1024,), (1024,), (1024,))
    assert nets.layer_shapes(nets.cifar_cnn()) == ((32, 32, 3), (16, 16, 64), (8, 8, 128), (4, 4, 256))
    assert nets.cifar_cnn().depth == 3


def test_net_is_hashable_static_description():
    assert hash(nets.cifar_cnn()) == hash(nets.cifar_cnn())
    assert nets.cifar_cnn() != nets.cifar_cnn(pool="avg")


@pytest.mark.parametrize(
    "net", [nets.mnist_mlp(width=32), nets.cifar_cnn((4, 8, 8)), nets.cifar_cnn((4, 8, 8), pool="avg")]
)
def test_forward_shapes_dtypes_and_switches(net):
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (5, *net.input_shape))
    logits, hiddens = nets.forward(net, params, x)
    chex.assert_shape(logits, (5, 10))
    chex.assert_type(logits, jnp.float32)
    for hidden, shape, layer in zip(hiddens, nets.layer_shapes(net)[1:], net.layers):
        chex.assert_shape(hidden.h, (5, *shape))
        assert bool(jnp.all(hidden.h >= 0))
        if layer.pool == "max":
            chex.assert_equal_shape([hidden.h, hidden.switches])
        else:
            assert hidden.switches is None


def test_forward_matches_numpy_oracle_on_small_cnn():
    net = nets.cifar_cnn((3, 4), input_shape=(8, 8, 2))
    params = nets.init(jax.random.key(0), net)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 2)).astype(np.float32)
    h = x
    for p in params["hidden"]:
        w, b = np.asarray(p["w"]), np.asarray(p["b"])
        pads = oracles.pads_for("SAME", h.shape[1:3], (3, 3), (1, 1))
        h = oracles.max_pool(np.maximum(oracles.conv(h, w, (1, 1), pads) + b, 0), 2)
    expected = h.reshape(2, -1) @ np.asarray(params["head"]["w"]) + np.asarray(params["head"]["b"])
    logits, _ = nets.forward(net, params, x)
    np.testing.assert_allclose(logits, expected, rtol=2e-4, atol=2e-4)


def test_hiddens_are_recorded_before_dropout():
    net = nets.mnist_mlp(width=64)
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    clean_logits, clean = nets.forward(net, params, x)
    noisy_logits, noisy = nets.forward(net, params, x, key=jax.random.key(2), dropout=0.5)
    np.testing.assert_array_equal(clean[0].h, noisy[0].h)  # layer 1 sees no dropped input
    assert not np.allclose(clean[1].h, noisy[1].h)  # layer 2's input was dropped
    assert not np.allclose(clean_logits, noisy_logits)


def test_forward_is_vmappable_over_an_extra_axis():
    net = nets.cifar_cnn((4, 4, 4))
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (3, 2, *net.input_shape))
    stacked, _ = jax.vmap(lambda xb: nets.forward(net, params, xb))(x)
    for i in range(3):
        np.testing.assert_allclose(stacked[i], nets.forward(net, params, x[i])[0], rtol=1e-5, atol=1e-5)


def test_jitted_forward_does_not_retrace():
    net = nets.mnist_mlp(width=16)
    params = nets.init(jax.random.key(0), net)
    fn = jax.jit(chex.assert_max_traces(lambda p, x: nets.forward(net, p, x), n=1))
    for seed in range(3):
        fn(params, jax.random.normal(jax.random.key(seed), (4, 28, 28, 1)))


@pytest.mark.parametrize(
    "net", [nets.mnist_mlp(width=16), nets.cifar_cnn((3, 4, 5), input_shape=(8, 8, 3))], ids=["mlp", "cnn"]
)
def test_forward_with_dropout_agrees_with_and_without_jit(net):
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, *net.input_shape))
    run = lambda p, x, key: nets.forward(net, p, x, key=key, dropout=0.3)
    with jax.disable_jit():
        eager = run(params, x, jax.random.key(2))
    chex.assert_trees_all_close(jax.jit(run)(params, x, jax.random.key(2)), eager, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    net = nets.mnist_mlp(width=16)
    params = nets.init(jax.random.key(0), net)
    with pytest.raises(ValueError, match=r"per-example shape \(784,\) but the net expects \(28, 28, 1\)"):
        nets.forward(net, params, jnp.zeros((2, 784)))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        nets.forward(net, params, jnp.zeros((2, 28, 28, 1)), dropout=0.5)
    with pytest.raises(ValueError, match="dropout must be in"):
        nets.forward(net, params, jnp.zeros((2, 28, 28, 1)), key=jax.random.key(0), dropout=1.0)
    with pytest.raises(ValueError, match="divisible by 2"):
        nets.cifar_cnn(input_shape=(30, 30, 3))
    with pytest.raises(ValueError, match="at least one hidden layer"):
        nets.Net((), 10, (28, 28, 1))
