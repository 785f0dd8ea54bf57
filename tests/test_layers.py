"""Layer maps, the oracle generator's adjoints and pooling, against numpy oracles."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import layerwise
import numpy as np
import oracles
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rev_nets import layers as L

jax.config.update("jax_default_matmul_precision", "highest")

conv_specs = st.builds(
    L.Conv,
    features=st.sampled_from([1, 4]),
    kernel_size=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
    strides=st.sampled_from([(1, 1), (2, 2), (1, 2)]),
    padding=st.sampled_from(["SAME", "VALID", ((1, 0), (2, 1))]),
    impl=st.sampled_from(["auto", "matmul", "lax"]),
)
conv_inputs = st.tuples(st.sampled_from([5, 8]), st.sampled_from([6, 7]), st.sampled_from([1, 3]))


def _draw(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _inner(a, b):
    return float(jnp.vdot(a, b))


@given(spec=conv_specs, in_shape=conv_inputs, seed=st.integers(0, 2**16))
def test_conv_adjoint_identity_and_numpy_oracle(spec, in_shape, seed):
    out_shape = L.pre_pool_shape(spec, in_shape)
    w, x, y = _draw(seed, L.weight_shape(spec, in_shape), (2, *in_shape), (2, *out_shape))
    ax = L.linear(spec, w, x)
    aty = layerwise.adjoint(spec, w, y, in_shape)
    pads = oracles.pads_for(spec.padding, in_shape[:2], spec.kernel_size, spec.strides)
    np.testing.assert_allclose(ax, oracles.conv(x, w, spec.strides, pads), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        aty, oracles.conv_transpose(y, w, in_shape[:2], spec.strides, pads), rtol=1e-4, atol=1e-4
    )
    lhs, rhs = _inner(ax, y), _inner(x, aty)
    assert abs(lhs - rhs) <= 1e-4 * (1 + abs(lhs)), (lhs, rhs)


@pytest.mark.parametrize("cpu_devices,expected", [(1, "matmul"), (2, "lax")])
def test_auto_conv_picks_matmul_on_one_cpu_device_and_lax_on_several(cpu_devices, expected):
    probe = (
        f"import jax; jax.config.update('jax_num_cpu_devices', {cpu_devices}); "
        "from rev_nets import layers; print(layers.conv_impl(layers.Conv(4)))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == expected


@given(spec=conv_specs, in_shape=conv_inputs, seed=st.integers(0, 2**16))
def test_conv_implementations_agree_forward_and_transposed(spec, in_shape, seed):
    other = dataclasses.replace(spec, impl="lax" if L.conv_impl(spec) == "matmul" else "matmul")
    w, x, y = _draw(seed, L.weight_shape(spec, in_shape), (2, *in_shape), (2, *L.pre_pool_shape(spec, in_shape)))
    np.testing.assert_allclose(L.linear(spec, w, x), L.linear(other, w, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        layerwise.adjoint(spec, w, y, in_shape), layerwise.adjoint(other, w, y, in_shape), rtol=1e-5, atol=1e-5
    )


@given(
    in_shape=st.sampled_from([(7,), (3, 4, 2)]),
    features=st.sampled_from([1, 5]),
    seed=st.integers(0, 2**16),
)
def test_dense_adjoint_is_matrix_transpose(in_shape, features, seed):
    spec = L.Dense(features)
    w, x, y = _draw(seed, L.weight_shape(spec, in_shape), (3, *in_shape), (3, features))
    aty = layerwise.adjoint(spec, w, y, in_shape)
    np.testing.assert_allclose(L.linear(spec, w, x), x.reshape(3, -1) @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aty, (y @ w.T).reshape(3, *in_shape), rtol=1e-5, atol=1e-5)
    assert aty.shape == (3, *in_shape)
    lhs, rhs = _inner(L.linear(spec, w, x), y), _inner(x, aty)
    assert abs(lhs - rhs) <= 1e-4 * (1 + abs(lhs))


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(size=st.sampled_from([2, 3]), seed=st.integers(0, 2**16))
def test_pooling_matches_numpy_and_unpool_is_right_inverse(kind, size, seed):
    spec = L.Conv(2, pool=kind, pool_size=size)
    (z,) = _draw(seed, (2, 2 * size, 3 * size, 2))
    hidden = L.pool(spec, z)
    oracle = oracles.max_pool if kind == "max" else oracles.avg_pool
    np.testing.assert_allclose(hidden.h, oracle(z, size), rtol=1e-6, atol=1e-6)
    h = jnp.abs(hidden.h)  # Hidden layers are post-ReLU, hence non-negative.
    np.testing.assert_allclose(L.pool(spec, layerwise.unpool(spec, h)).h, h, rtol=1e-6)
    if kind == "max":
        assert hidden.switches.dtype == jnp.int32 and hidden.switches.shape == hidden.h.shape
        np.testing.assert_allclose(L.pool(spec, layerwise.unpool(spec, h, hidden.switches)).h, h, rtol=1e-6)


def test_unpool_with_switches_returns_each_max_to_its_position():
    spec = L.Conv(1, pool="max")
    z = jnp.asarray(np.random.default_rng(0).permutation(32).reshape(1, 4, 8, 1), jnp.float32)
    hidden = L.pool(spec, z)
    back = layerwise.unpool(spec, hidden.h, hidden.switches)
    winners = back > 0
    assert int(winners.sum()) == hidden.h.size - int((hidden.h == 0).sum())
    np.testing.assert_array_equal(back[winners], z[winners])
    np.testing.assert_array_equal(oracles.max_pool(np.asarray(z), 2), hidden.h)


def test_unpool_without_switches_copies_over_the_window():
    spec = L.Conv(1, pool="max")
    h = jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    expected = np.kron(np.arange(1.0, 5.0).reshape(2, 2), np.ones((2, 2)))
    np.testing.assert_array_equal(layerwise.unpool(spec, h)[0, :, :, 0], expected)


def test_shapes_and_fan_in():
    conv = L.Conv(8, kernel_size=(3, 3), strides=(2, 2), pool="max")
    assert L.pre_pool_shape(conv, (32, 32, 3)) == (16, 16, 8)
    assert L.out_shape(conv, (32, 32, 3)) == (8, 8, 8)
    assert L.fan_in(conv, (32, 32, 3)) == 27
    assert L.fan_in(L.Dense(5), (4, 4, 2)) == 32
    assert L.weight_shape(conv, (32, 32, 3)) == (3, 3, 3, 8)


def test_bad_layer_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by 2"):
        L.out_shape(L.Conv(4, pool="max"), (7, 8, 3))
    with pytest.raises(ValueError, match="impl must be"):
        L.Conv(4, impl="fft")
    with pytest.raises(ValueError, match="pool must be"):
        L.Conv(4, pool="median")
    with pytest.raises(ValueError, match="Dense layers cannot pool"):
        L.Dense(4, pool="max")
    with pytest.raises(ValueError, match="features must be positive"):
        L.Dense(0)
    with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
        L.pre_pool_shape(L.Conv(4), (784,))


def test_apply_is_relu_of_affine_then_pool():
    spec = L.Conv(3, pool="max")
    params = L.init(jax.random.key(0), spec, (4, 4, 2))
    params["b"] = jnp.array([0.1, -0.2, 0.3])
    (x,) = _draw(1, (2, 4, 4, 2))
    w = np.asarray(params["w"])
    pads = oracles.pads_for("SAME", (4, 4), (3, 3), (1, 1))
    expected = oracles.max_pool(np.maximum(oracles.conv(x, w, (1, 1), pads) + np.asarray(params["b"]), 0), 2)
    np.testing.assert_allclose(L.apply(spec, params, x).h, expected, rtol=1e-5, atol=1e-5)


def test_init_is_he_normal():
    params = L.init(jax.random.key(0), L.Dense(512), (1024,))
    np.testing.assert_allclose(np.std(params["w"]), np.sqrt(2 / 1024), rtol=0.02)
    assert params["w"].dtype == jnp.float32 and not np.any(params["b"])


@given(size=st.sampled_from([2, 3]), height=st.sampled_from([6, 7]), seed=st.integers(0, 2**16))
def test_max_pool_is_flaxs_valid_max_pool_in_value_gradient_and_reverse(size, height, seed):
    from flax import nnx

    from rev_nets import generator

    (z, g) = _draw(seed, (2, height, height + 1, 3), (2, height // size, (height + 1) // size, 3))
    flax_pool = lambda v: nnx.max_pool(v, (size, size), strides=(size, size))
    np.testing.assert_array_equal(L.max_pool(z, size), flax_pool(z))
    np.testing.assert_array_equal(jax.jit(L.max_pool, static_argnums=1)(z, size), flax_pool(z))
    ours, theirs = (jax.vjp(f, z)[1](g)[0] for f in (lambda v: L.max_pool(v, size), flax_pool))
    np.testing.assert_array_equal(ours, theirs)  # Normal draws: no ties, so both route to the same winners.
    reversed_ours = generator.reverse(lambda v: L.max_pool(v, size), z, h=jnp.abs(g))
    np.testing.assert_array_equal(reversed_ours, generator.reverse(flax_pool, z, h=jnp.abs(g)))
