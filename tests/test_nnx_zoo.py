"""The zoo's airbench-like ReLU net: its whitening filter, identity initialisation, data-fitted constants held
through training, and the generator's alphas through BatchNorm after max pooling."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy.special import erf

from rev_nets import generator, models, nnx_zoo, shadow, train
from rev_nets.errors import InputError, SettingError


def _images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 32, 32, 3))
    return jnp.asarray(base + np.roll(base, 1, axis=1), jnp.float32)  # neighbouring pixels correlate


def test_the_whitening_filter_whitens_the_patches_it_was_fitted_on():
    images = _images()
    kernel = nnx_zoo.patch_whitening(images, 2, 5e-4)
    assert kernel.shape == (2, 2, 3, 24)
    out = jax.lax.conv_general_dilated(images, kernel, (1, 1), "VALID", dimension_numbers=nnx_zoo.CONV_LAYOUT)
    half = out[..., :12].reshape(-1, 12)
    covariance = np.asarray(half.T @ half / half.shape[0])
    np.testing.assert_allclose(covariance, np.eye(12), atol=2e-3)  # identity, up to eps / eigenvalue
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])


def test_dirac_init_makes_the_first_filters_pass_their_input_on():
    kernel = nnx_zoo.dirac_init(jax.random.key(0), (3, 3, 4, 6))
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 4))
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=nnx_zoo.CONV_LAYOUT)
    np.testing.assert_allclose(y[..., :4], x, rtol=1e-6)
    assert float(jnp.std(kernel[..., 4:])) > 0  # the other filters keep the default initialisation


SMALL = {"widths": [4, 8, 8]}


def test_the_whitening_filter_is_fitted_before_the_first_step_and_held_through_weight_decay():
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL)
    x, y = _images(24), jnp.arange(24) % 10
    config = train.TrainConfig(epochs=1, batch_size=8, weight_decay=0.5, learning_rate=0.1)
    state, _ = train.fit_in_memory(model, config, (x, y), steps=3)
    np.testing.assert_array_equal(state.params["whitening"]["kernel"][...], nnx_zoo.patch_whitening(x, 2, 5e-4))
    fresh = model.init(jax.random.key(0))
    assert not np.allclose(state.params["whitening"]["bias"][...], fresh["whitening"]["bias"][...])  # trained
    groups = model.param_groups(fresh)
    assert groups["whitening"]["kernel"] == "fixed" and groups["whitening"]["bias"] == "trained"
    assert groups["groups"][0]["first_norm"]["bias"] == "norm" and groups["groups"][0]["first_norm"]["mean"] == "fixed"


@pytest.mark.parametrize("batch_norm_scale", [False, True])
def test_calibrated_alphas_fold_batchnorm_after_max_pooling(batch_norm_scale):
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, batch_norm_scale=batch_norm_scale)
    x = _images(8)
    params = model.prepare(model.init(jax.random.key(0)), x)
    params = model.with_stats(params, model.forward(params, x, key=jax.random.key(1)).stats)
    group = params["groups"][0]
    if batch_norm_scale:  # A learned scale folds in beside the statistics'; random, so that it shows.
        for norm in ("first_norm", "second_norm"):
            group[norm]["scale"][...] = jax.random.uniform(jax.random.key(2), group[norm]["scale"].shape) + 0.5
    alphas = generator.alphas(lambda v: model.features(params, v, 1), x)
    for alpha, (conv, norm), c in zip(alphas[1:], [("first", "first_norm"), ("second", "second_norm")], (2.0, 2.0)):
        w = np.asarray(group[conv]["kernel"][...], np.float64)
        scale = 1 / np.sqrt(np.asarray(group[norm]["var"][...], np.float64) + 1e-12)
        if batch_norm_scale:
            scale = scale * np.asarray(group[norm]["scale"][...], np.float64)
        expected = c / (9 * w.shape[2] * np.mean((w * scale) ** 2))
        np.testing.assert_allclose(alpha, expected, rtol=1e-4)
    assert generator.twins(model, params, x, 3).shape == x.shape


def test_shadow_trains_the_net_from_its_last_two_groups():
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL)
    x, y = _images(16), jnp.arange(16) % 10
    for layer in (2, 3):
        config = train.TrainConfig(epochs=1, batch_size=8, learning_rate=0.05, shadow=shadow.ShadowConfig(layer=layer))
        state, history = train.fit_in_memory(model, config, (x, y), {"test": (x, y)})
        assert np.isfinite(history[-1]["train_ce_synthetic"]) and 0 < history[-1]["train_norm_ratio"]
    chex.assert_tree_all_finite(nnx.filter_state(state.params, nnx.BatchStat))


def test_bfloat16_compute_keeps_float32_params_and_statistics_and_agrees_with_float32():
    x, y = _images(16), jnp.arange(16) % 10
    mixed, full = (
        models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, compute_dtype=d) for d in ("bfloat16", "float32")
    )
    params = mixed.prepare(mixed.init(jax.random.key(0)), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert mixed.features(params, x, 3).dtype == jnp.bfloat16
    logits, reference = (m.forward(params, x, key=jax.random.key(1)).logits for m in (mixed, full))
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, reference, atol=0.03 * float(jnp.abs(reference).max()))
    config = train.TrainConfig(epochs=1, batch_size=8, learning_rate=0.05, shadow=shadow.ShadowConfig(layer=3))
    state, history = train.fit_in_memory(mixed, config, (x, y), {"test": (x, y)})
    assert np.isfinite(history[-1]["train_ce_synthetic"])
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}


def test_each_part_of_the_recipe_is_an_argument_of_the_net():
    x = _images(8)
    build = functools.partial(models.build_model, "rev_nets.nnx_zoo:airbench_relu", **SMALL)
    recipe, plain = (
        build(),
        build(whitening_eps=0.1, identity_init=False, batch_norm_scale=True, batch_norm_epsilon=1e-3),
    )
    params = plain.prepare(plain.init(jax.random.key(0)), x)
    np.testing.assert_array_equal(params["whitening"]["kernel"][...], nnx_zoo.patch_whitening(x, 2, 0.1))
    kernel = np.asarray(params["groups"][1]["first"]["kernel"][...])  # 4 -> 8 channels: identities, if any, first
    assert not np.allclose(kernel[1, 1, :, :4], np.eye(4))
    ours = recipe.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(ours["groups"][1]["first"]["kernel"][...])[1, 1, :, :4], np.eye(4))
    assert plain.param_groups(params)["groups"][0]["first_norm"]["scale"] == "norm"
    assert "scale" not in ours["groups"][0]["first_norm"]
    assert plain.module(params).groups[0].first_norm.epsilon == 1e-3
    assert recipe.module(ours).groups[0].first_norm.epsilon == 1e-12
    for name in ("whitening_eps", "batch_norm_epsilon"):
        with pytest.raises(SettingError, match=f"{name}.*must be > 0.*got 0"):
            build(**{name: 0.0})


def test_an_unknown_compute_dtype_is_one_sentence():
    with pytest.raises(SettingError, match="compute_dtype.*float32, bfloat16.*'float16'"):
        models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, compute_dtype="float16")


def test_the_matmul_convolution_gives_the_lax_nets_logits_twins_and_alphas():
    x = _images(8)
    results = []
    for impl in ("lax", "matmul"):
        model = models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, conv_impl=impl)
        params = model.prepare(model.init(jax.random.key(0)), x)
        forward = model.forward(params, x, key=jax.random.key(1))
        params = model.with_stats(params, forward.stats)
        alphas = generator.alphas(functools.partial(model.features, params, layer=3), x)
        results.append((forward.logits, generator.twins(model, params, x, 3), np.array(alphas)))
    for lax_result, matmul_result in zip(*results):
        np.testing.assert_allclose(matmul_result, lax_result, rtol=1e-4, atol=1e-5 * float(np.abs(lax_result).max()))
    with pytest.raises(SettingError, match="conv_impl.*auto, matmul, lax"):
        models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, conv_impl="fft")


def test_the_gelu_nets_reverse_is_its_features_vjp_and_needs_plain_vjp():
    # No ReLU left: with unit alphas in evaluation mode, every map reverses by its transpose (max pooling through
    # its switches, BatchNorm by its scale) and GELU by its Jacobian, which is the VJP of the features.
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, activation="gelu")
    x = _images(4)
    params = model.prepare(model.init(jax.random.key(0)), x)
    params = model.with_stats(params, model.forward(params, x, key=jax.random.key(1)).stats)
    features = functools.partial(model.features, params, layer=2)
    h, vjp = jax.vjp(features, x)
    reverse = generator.reverse(features, x, h=h, alpha=1.0, plain_vjp=nnx_zoo.GELU_PRIMITIVES)
    (expected,) = vjp(h)
    np.testing.assert_allclose(reverse, expected, rtol=1e-4, atol=1e-5 * float(jnp.abs(expected).max()))
    with pytest.raises(InputError, match=r"through 'erfc', 'mul' on .*Pass plain_vjp=\('erfc', 'mul'\) to use their"):
        generator.reverse(features, x, alpha=1.0)


def test_gelu_is_airbench94s_exact_gelu_and_an_unknown_activation_is_one_sentence():
    relu, gelu = (models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, activation=a) for a in ("relu", "gelu"))
    x = _images(4)
    params = relu.prepare(relu.init(jax.random.key(0)), x)
    v = jnp.linspace(-3, 3, 7)
    np.testing.assert_allclose(nnx_zoo.ACTIVATIONS["gelu"](v), v * (1 + erf(v / np.sqrt(2))) / 2, rtol=1e-6, atol=1e-7)
    assert not np.allclose(relu.features(params, x, 1), gelu.features(params, x, 1))
    with pytest.raises(SettingError, match="activation must be one of relu, gelu, got 'tanh'"):
        models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL, activation="tanh")


def test_the_fixed_whitening_filter_gets_no_gradient_so_the_clip_counts_only_what_moves():
    """The step holds the ``fixed`` group behind stop_gradient: with a clip between the moving params' gradient
    norm and the norm with the whitening filter's gradient counted, one step is not clipped and records the
    moving params' norm."""
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL)
    x, y = _images(24), jnp.arange(24) % 10
    params = model.prepare(model.init(jax.random.key(0)), x)
    loss = lambda p: shadow.loss(model, p, x, y, shadow.ShadowConfig(), jax.random.key(1))[0]
    grads = jax.grad(loss)(params)
    held = jax.grad(lambda p: loss(models.hold_fixed(model, p)))(params)
    np.testing.assert_array_equal(held["whitening"]["kernel"][...], 0.0)
    assert float(jnp.linalg.norm(grads["whitening"]["kernel"][...])) > 1e-3  # a real gradient, held
    np.testing.assert_allclose(held["groups"][0]["first"]["kernel"][...], grads["groups"][0]["first"]["kernel"][...])
    moving, full = float(optax.tree.norm(held)), float(optax.tree.norm(grads))
    config = train.TrainConfig(epochs=1, batch_size=24, learning_rate=1e-3, grad_clip=(moving + full) / 2)
    _, history = train.fit_in_memory(model, config, (x, y), steps=1)
    assert history[0]["train_clipped"] == 0.0
    assert history[0]["train_grad_norm"] == pytest.approx(moving, rel=1e-4)


def test_a_param_group_label_the_optimizer_does_not_know_is_one_sentence():
    model = models.build_model("rev_nets.nnx_zoo:airbench_relu", **SMALL)
    object.__setattr__(model, "param_groups", lambda params: jax.tree.map(lambda _: "frozen", params))
    with pytest.raises(InputError, match=r"param_groups gives the labels 'frozen'.*one of trained, norm, fixed"):
        train.fit_in_memory(model, train.TrainConfig(epochs=1, batch_size=8), (_images(8), jnp.arange(8)), steps=1)
