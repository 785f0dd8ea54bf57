"""The SHADOW loss: numpy oracle, stopped gradients, the real loss's gradient untouched by generation."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rev_nets import layers as L
from rev_nets import nets, shadow
from rev_nets.errors import SettingError
from rev_nets.generator import GeneratorConfig

TINY = nets.Net((L.Dense(6), L.Dense(5), L.Dense(4)), num_classes=3, input_shape=(2, 2, 2))


def _tiny_batch(seed=0, batch=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 2, 2, 2)).astype(np.float32)
    y = rng.integers(0, 3, batch).astype(np.int32)
    return x, y


def _numpy_shadow_loss(params, x, y, layer, weight):
    """Forward, generate from h_layer with calibrated alpha, forward again, weighted CE: all in numpy."""
    ws = [np.asarray(p["w"], np.float64) for p in params["hidden"]]
    bs = [np.asarray(p["b"], np.float64) for p in params["hidden"]]
    head_w, head_b = np.asarray(params["head"]["w"], np.float64), np.asarray(params["head"]["b"], np.float64)

    def forward(inputs):
        h, hs = inputs.reshape(len(inputs), -1), []
        for w, b in zip(ws, bs):
            h = np.maximum(h @ w + b, 0)
            hs.append(h)
        return h @ head_w + head_b, hs

    def ce(logits):
        z = logits - logits.max(1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y])

    logits, hs = forward(x.astype(np.float64))
    g = hs[layer - 1]
    for l in range(layer, 0, -1):
        w = ws[l - 1]
        relu = l > 1
        alpha = (2.0 if relu else 1.0) / (w.shape[0] * np.mean(w**2))
        g = alpha * g @ w.T
        g = np.maximum(g, 0) if relu else g
    logits_syn, _ = forward(g.reshape(x.shape))
    return (ce(logits) + weight * ce(logits_syn)) / (1 + weight)


@pytest.mark.parametrize("layer,weight", [(1, 1.0), (3, 1.0), (2, 0.5)])
def test_loss_matches_numpy_oracle(layer, weight):
    params = nets.init(jax.random.key(0), TINY)
    x, y = _tiny_batch()
    config = shadow.ShadowConfig(layer=layer, weight=weight)
    value, (metrics, _) = shadow.loss(TINY, params, jnp.asarray(x), jnp.asarray(y), config, jax.random.key(1))
    np.testing.assert_allclose(value, _numpy_shadow_loss(params, x, y, layer, weight), rtol=1e-5)
    assert set(metrics) == {"ce_real", "error_real", "ce_synthetic", "error_synthetic", "norm_ratio"}


def test_shadow_off_is_plain_cross_entropy():
    params = nets.init(jax.random.key(0), TINY)
    x, y = _tiny_batch()
    value, (metrics, _) = shadow.loss(TINY, params, x, y, shadow.ShadowConfig(layer=0), jax.random.key(1))
    logits, _ = nets.forward(TINY, params, x)
    np.testing.assert_allclose(value, shadow.cross_entropy(logits, y), rtol=1e-6)
    assert set(metrics) == {"ce_real", "error_real"}


def test_weight_is_zero_before_the_start_epoch_then_w():
    config = shadow.ShadowConfig(layer=2, weight=0.7, start_epoch=1.5)
    steps = jnp.arange(8)
    np.testing.assert_allclose(shadow.weight_at(config, steps, steps_per_epoch=4), [0] * 6 + [0.7] * 2, rtol=1e-7)


def test_zero_weight_is_the_real_loss_with_synthetic_metrics():
    params = nets.init(jax.random.key(0), TINY)
    x, y = _tiny_batch()
    config = shadow.ShadowConfig(layer=2)
    value, (metrics, _) = shadow.loss(TINY, params, x, y, config, jax.random.key(1), weight=0.0)
    np.testing.assert_allclose(value, metrics["ce_real"], rtol=1e-6)
    full, _ = shadow.loss(TINY, params, x, y, config, jax.random.key(1))
    np.testing.assert_allclose(full, (metrics["ce_real"] + metrics["ce_synthetic"]) / 2, rtol=1e-6)


@pytest.mark.parametrize("net", [TINY, nets.cifar_cnn((3, 4, 5), input_shape=(8, 8, 3))], ids=["mlp", "cnn"])
def test_no_gradient_flows_through_the_synthetic_inputs(net):
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, *net.input_shape))
    y = jnp.array([0, 1, 2, 0])
    config = shadow.ShadowConfig(layer=3, weight=0.7, generator=GeneratorConfig(rho=0.8, smooth_sigma=0.5))
    key = jax.random.key(2)
    grads = jax.grad(lambda p: shadow.loss(net, p, x, y, config, key)[0])(params)

    # The same synthetic batch, made outside the differentiated function: pure data.
    x_syn = shadow.twins(net, params, x, config, jax.random.split(key, 3)[2])  # loss's gen_key

    def loss_on_fixed_data(p):
        ce_real = shadow.cross_entropy(nets.forward(net, p, x)[0], y)
        ce_syn = shadow.cross_entropy(nets.forward(net, p, x_syn)[0], y)
        return (ce_real + config.weight * ce_syn) / (1 + config.weight)

    expected = jax.grad(loss_on_fixed_data)(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, expected)


@pytest.mark.parametrize("net", [TINY, nets.cifar_cnn((3, 4, 5), input_shape=(8, 8, 3))], ids=["mlp", "cnn"])
def test_the_real_losss_gradient_is_plain_backprops(net):
    """Generation's swapped ReLU rule lives in its own pass: with weight 0, SHADOW's gradient is backprop's."""
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, *net.input_shape))
    y = jnp.array([0, 1, 2, 0])
    config = shadow.ShadowConfig(layer=3)
    shadow_grads = jax.grad(lambda p: shadow.loss(net, p, x, y, config, jax.random.key(2), weight=0.0)[0])(params)
    plain_grads = jax.grad(lambda p: shadow.cross_entropy(nets.forward(net, p, x)[0], y))(params)
    chex.assert_trees_all_close(shadow_grads, plain_grads, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_equal_shapes(shadow_grads, params)


def test_noise_twin_has_the_energy_of_the_synthetic_difference():
    x = jax.random.normal(jax.random.key(0), (6, 4, 4, 3))
    x_syn = 3.0 * jax.random.normal(jax.random.key(1), (6, 4, 4, 3))
    twin = shadow.noise_twin(jax.random.key(2), x, x_syn)
    energy = lambda d: jnp.linalg.norm(d.reshape(6, -1), axis=1)
    np.testing.assert_allclose(energy(twin - x), energy(x_syn - x), rtol=1e-5)
    assert not np.allclose(twin, x_syn)


def test_noise_twin_arm_trains_on_noisy_real_inputs():
    params = nets.init(jax.random.key(0), TINY)
    x, _ = _tiny_batch()
    config = shadow.ShadowConfig(layer=3, noise_twin=True)
    twin = shadow.twins(TINY, params, x, config, jax.random.key(3))
    genuine = shadow.twins(TINY, params, x, dataclasses.replace(config, noise_twin=False), jax.random.key(3))
    energy = lambda d: np.linalg.norm(np.reshape(d, (len(x), -1)), axis=1)
    np.testing.assert_allclose(energy(twin - x), energy(genuine - x), rtol=1e-5)


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("layer", 4, r"^layer must be 0 \(off\) or 1..3 for this model, got 4\.$"),
        ("layer", -1, r"^layer must be 0 \(off\) or 1..3"),
        ("layer", 1.5, r"^layer must be 0 \(off\) or 1..3"),
        ("weight", -1.0, "^weight must be >= 0"),
        ("weight", float("nan"), "^weight must be >= 0 and finite, got nan"),
        ("weight", float("inf"), "^weight must be >= 0 and finite, got inf"),
        ("start_epoch", -1.0, "^start_epoch must be >= 0"),
        ("start_epoch", float("nan"), "^start_epoch must be >= 0 and finite"),
    ],
)
def test_bad_settings_raise_one_sentence_naming_the_setting(setting, value, message):
    with pytest.raises(SettingError, match=message) as error:
        shadow.ShadowConfig(**{setting: value}).check(TINY)
    assert error.value.setting == setting


def test_shadow_is_off_by_default_with_the_default_generator():
    config = shadow.ShadowConfig()
    assert not config.enabled and config.generator == GeneratorConfig()
    config.check(TINY)


def test_an_alpha_override_replaces_only_the_records_alpha():
    """Frozen alphas (arrays) replace the record's alpha; its other options still apply."""
    params = nets.init(jax.random.key(0), TINY)
    x, _ = _tiny_batch()
    options = GeneratorConfig(rho=0.8, alpha_scale=1.3)
    config = shadow.ShadowConfig(layer=2, generator=options)
    frozen = (jnp.float32(0.9), jnp.float32(1.1))
    overridden = shadow.twins(TINY, params, x, config, jax.random.key(3), alpha=frozen)
    numbers = dataclasses.replace(config, generator=dataclasses.replace(options, alpha=(0.9, 1.1)))
    expected = shadow.twins(TINY, params, x, numbers, jax.random.key(3))
    np.testing.assert_allclose(overridden, expected, rtol=1e-6)


def test_loss_and_gradient_agree_with_and_without_jit():
    """Every setting that draws randomness or reshapes data is on: sampling, smoothing, dropout."""
    net = nets.cifar_cnn((3, 4, 5), input_shape=(8, 8, 3))
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, *net.input_shape))
    y = jnp.array([0, 1, 2, 0])
    config = shadow.ShadowConfig(layer=2, weight=0.7, generator=GeneratorConfig(rho=0.8, smooth_sigma=0.5))

    def value_and_grad(params, key):
        loss = lambda p: shadow.loss(net, p, x, y, config, key, dropout=0.3)
        return jax.value_and_grad(loss, has_aux=True)(params)

    with jax.disable_jit():
        eager = value_and_grad(params, jax.random.key(2))
    jitted = jax.jit(value_and_grad)(params, jax.random.key(2))
    chex.assert_trees_all_close(jitted, eager, rtol=1e-4, atol=1e-6)
