"""The transposed-weight generator on the built-in nets: the layer-by-layer oracle, shapes, jit, sampling, calibration."""

import chex
import jax
import jax.numpy as jnp
import layerwise
import numpy as np
import oracles
import pytest
from absl.testing import parameterized

from rev_nets import generator, nets
from rev_nets import layers as L
from rev_nets.errors import InputError, SettingError
from rev_nets.generator import GeneratorConfig

SMALL_NETS = {
    "mlp": nets.mnist_mlp(width=32),
    "cnn_max": nets.cifar_cnn((4, 8, 8)),
    "cnn_avg": nets.cifar_cnn((4, 8, 8), pool="avg"),
}


def _sparse_nonnegative(key, shape, density):
    """Non-negative h with a fraction ``density`` of nonzeros drawn from U[0.5, 1.5]."""
    support = jax.random.bernoulli(key, density, shape)
    values = jax.random.uniform(jax.random.fold_in(key, 1), shape, minval=0.5, maxval=1.5)
    return jnp.where(support, values, 0.0)


class GenerateVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(name=list(SMALL_NETS), layer=[1, 2, 3], rho=[1.0, 0.7], smooth_sigma=[0.0, 1.0])
    def test_shape_dtype_and_jit_agreement(self, name, layer, rho, smooth_sigma):
        net = SMALL_NETS[name]
        params = nets.init(jax.random.key(0), net)
        x = jax.random.normal(jax.random.key(1), (3, *net.input_shape))

        @self.variant
        def gen(params, x, key):
            return generator.twins(net, params, x, layer, key=key, rho=rho, smooth_sigma=smooth_sigma)

        out = gen(params, x, jax.random.key(2))
        chex.assert_shape(out, x.shape)
        chex.assert_type(out, x.dtype)
        chex.assert_tree_all_finite(out)
        _, hiddens = nets.forward(net, params, x)
        reference = layerwise.generate(
            net, params, hiddens, layer, key=jax.random.key(2), rho=rho, smooth_sigma=smooth_sigma
        )
        np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


ORACLE_NETS = {
    "mlp": nets.mnist_mlp(width=48),
    "cnn_max_matmul": nets.Net(tuple(L.Conv(c, pool="max", impl="matmul") for c in (4, 6, 8)), 10, (16, 16, 3)),
    "cnn_max_lax": nets.Net(tuple(L.Conv(c, pool="max", impl="lax") for c in (4, 6, 8)), 10, (16, 16, 3)),
    "cnn_avg": nets.cifar_cnn((4, 6, 8), pool="avg", input_shape=(16, 16, 3)),
    "cnn_stride_valid": nets.Net((L.Conv(4, strides=(2, 2)), L.Conv(6, padding="VALID", pool="max")), 10, (16, 16, 3)),
}
ORACLE_SETTINGS = {
    "switches": {},
    "copy": {"use_switches": False},
    "sampling": {"rho": 0.6, "key": jax.random.key(7)},
    "smoothing": {"smooth_sigma": 0.8},
    "given_alpha": {"alpha": (0.7, 1.3, 0.9), "alpha_scale": 1.2, "input_relu": True},
}


@pytest.mark.parametrize("setting", list(ORACLE_SETTINGS))
@pytest.mark.parametrize("name", list(ORACLE_NETS))
def test_twins_equal_the_layer_by_layer_generator(name, setting):
    """Every layer, with switches and copying, fixed-key sampling, smoothing, and given alphas (ReLUs make ties)."""
    net = ORACLE_NETS[name]
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (3, *net.input_shape))
    _, hiddens = nets.forward(net, params, x)
    for layer in range(1, net.depth + 1):
        settings = dict(ORACLE_SETTINGS[setting])
        if "alpha" in settings:
            settings["alpha"] = settings["alpha"][:layer]
        expected = layerwise.generate(net, params, hiddens, layer, **settings)
        np.testing.assert_allclose(generator.twins(net, params, x, layer, **settings), expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(ORACLE_NETS))
def test_calibrated_alphas_read_from_the_trace_equal_the_layer_formula(name):
    net = ORACLE_NETS[name]
    params = nets.init(jax.random.key(0), net)
    x = jnp.zeros((2, *net.input_shape))
    shapes = nets.layer_shapes(net)
    for rho, input_relu in ((1.0, False), (0.5, True)):
        read = generator.alphas(lambda v: net.features(params, v, net.depth), x, rho=rho, input_relu=input_relu)
        expected = [
            layerwise.calibrated_alpha(spec, p["w"], shape, rho, l > 0 or input_relu)
            for l, (spec, p, shape) in enumerate(zip(net.layers, params["hidden"], shapes))
        ]
        np.testing.assert_allclose(read, expected, rtol=1e-6)


def test_sampling_mask_keeps_fraction_rho():
    net = nets.mnist_mlp(width=64)
    params = nets.init(jax.random.key(0), net)
    h = jax.random.uniform(jax.random.key(1), (64, 64)) + 0.1
    rho = 0.6
    x = generator.twins(net, params, None, 1, h=h, key=jax.random.key(2), rho=rho)
    # Without the input ReLU every unmasked entry is nonzero almost surely.
    kept = float(jnp.mean(x != 0))
    tolerance = 5 * np.sqrt(rho * (1 - rho) / x.size)  # 5 binomial standard errors
    assert abs(kept - rho) < tolerance, (kept, tolerance)


def test_switches_route_values_to_the_winning_positions():
    net = nets.cifar_cnn((4, 4, 4))
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (2, *net.input_shape))
    _, hiddens = nets.forward(net, params, x)
    with_switches = generator.twins(net, params, x, 1)
    copied = generator.twins(net, params, x, 1, use_switches=False)
    spec, w = net.layers[0], params["hidden"][0]["w"]
    alpha = layerwise.calibrated_alpha(spec, w, net.input_shape, 1.0, False)
    unpooled = layerwise.unpool(spec, hiddens[0].h, hiddens[0].switches)
    np.testing.assert_allclose(
        with_switches, alpha * layerwise.adjoint(spec, w, unpooled, net.input_shape), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(with_switches, copied)


def _support_ratio(spec, in_shape, rho, relu, draws=16, weight_std=0.3, batch=4, density=0.02):
    """Mean of ``(A G(h))_i / unpool(h)_i`` over the support, for Gaussian ``A``.

    Weights are shared across positions in a conv, so one kernel's fluctuation
    does not average out over units: the mean is over ``draws`` weight draws
    (measured spread of one draw's mean here: ~0.06, so 16 draws give ~0.016).
    Only units whose receptive field lies inside the input count (units at a
    padded border have fewer terms in their sum than the fan-in).
    """
    interior = L.linear(spec, jnp.ones(L.weight_shape(spec, in_shape)), jnp.ones((1, *in_shape))) == L.fan_in(
        spec, in_shape
    )

    def one_draw(key):
        w = weight_std * jax.random.normal(key, L.weight_shape(spec, in_shape))
        h = _sparse_nonnegative(jax.random.fold_in(key, 1), (batch, *L.out_shape(spec, in_shape)), density)
        layer = lambda u: L.apply(spec, {"w": w, "b": jnp.zeros(spec.features)}, u).h
        zeros = jnp.zeros((batch, *in_shape))
        g = generator.reverse(
            layer, zeros, h=h, use_switches=False, input_relu=relu, rho=rho, key=jax.random.fold_in(key, 2)
        )
        target = layerwise.unpool(spec, h)
        support = (target > 0) & interior
        ratio = jnp.where(support, L.linear(spec, w, g) / jnp.where(support, target, 1.0), 0.0)
        return ratio.sum() / support.sum()

    keys = jax.random.split(jax.random.key(0), draws)
    return float(jnp.mean(jax.jit(jax.vmap(one_draw))(keys)))


@pytest.mark.parametrize(
    "spec,in_shape",
    [
        (L.Dense(400), (2000,)),
        (L.Conv(64), (16, 16, 16)),
        (L.Conv(64, padding="VALID"), (16, 16, 16)),
        (L.Conv(64, strides=(2, 2)), (16, 16, 16)),
        (L.Conv(64, kernel_size=(5, 5), pool="max"), (16, 16, 8)),
        (L.Conv(64, pool="avg"), (16, 16, 16)),
    ],
    ids=["dense", "conv_same", "conv_valid", "conv_stride2", "conv5_maxpool", "conv_avgpool"],
)
@pytest.mark.parametrize("relu,rho", [(True, 1.0), (False, 1.0), (True, 0.5)])
def test_calibrated_alpha_gives_back_h_on_its_support(spec, in_shape, relu, rho):
    ratio = _support_ratio(spec, in_shape, rho, relu)
    assert abs(ratio - 1.0) < 0.1, ratio


def test_dense_layer_reproduces_paper_section_1_statistics():
    """n=4000, m=1000, k=10, rho=1, N(0,1) weights: support ratio ~1, noise std ||h|| sqrt(2/n)."""
    n, m, k, trials = 4000, 1000, 10, 20
    spec = L.Dense(m)
    key = jax.random.key(0)
    w = jax.random.normal(key, (n, m))
    rows = jax.vmap(lambda kk: jax.random.choice(kk, m, (k,), replace=False))(jax.random.split(key, trials))
    values = jax.random.uniform(jax.random.fold_in(key, 1), (trials, k), minval=0.5, maxval=1.5)
    h = jnp.zeros((trials, m)).at[jnp.arange(trials)[:, None], rows].set(values)
    layer = lambda u: jax.nn.relu(u @ w)
    zeros = jnp.zeros((trials, n))
    (alpha,) = generator.alphas(layer, zeros, input_relu=True)
    np.testing.assert_allclose(alpha, 2.0 / (n * jnp.mean(w**2)), rtol=1e-6)
    x = generator.reverse(layer, zeros, h=h, input_relu=True)
    wtx = L.linear(spec, w, x)
    support = h > 0
    ratio = float(jnp.mean(wtx[support] / h[support]))
    noise_std = float(jnp.std(wtx[~support]))
    predicted_std = float(jnp.mean(jnp.linalg.norm(h, axis=1))) * np.sqrt(2 / n)
    assert abs(ratio - 1.0) < 0.05, ratio
    assert abs(noise_std / predicted_std - 1.0) < 0.1, (noise_std, predicted_std)


def test_twins_do_not_retrace_under_jit():
    net = SMALL_NETS["cnn_max"]
    params = nets.init(jax.random.key(0), net)
    gen = jax.jit(chex.assert_max_traces(lambda p, x: generator.twins(net, p, x, 2), n=1))
    for seed in range(3):
        gen(params, jax.random.normal(jax.random.key(seed), (2, *net.input_shape)))


def test_gaussian_blur_keeps_constants_and_reduces_noise():
    constant = jnp.full((1, 8, 8, 3), 0.7)
    np.testing.assert_allclose(generator.gaussian_blur(constant, 1.0), constant, rtol=1e-6)
    noise = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    blurred = generator.gaussian_blur(noise, 1.0)
    chex.assert_equal_shape([noise, blurred])
    assert float(jnp.std(blurred)) < 0.5 * float(jnp.std(noise))


def test_explicit_alpha_per_layer_scales_output():
    net = SMALL_NETS["mlp"]
    params = nets.init(jax.random.key(0), net)
    h = jax.random.uniform(jax.random.key(1), (2, 32))
    one = generator.twins(net, params, None, 2, h=h, alpha=1.0)
    three = generator.twins(net, params, None, 2, h=h, alpha=(3.0, 1.0))
    np.testing.assert_allclose(three, 3.0 * one, rtol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn_max"])
def test_alpha_scale_scales_output_by_its_power_of_the_depth(name):
    """ReLU commutes with positive scaling, so generating from h_l with alpha * s gives s**l times the input."""
    net = SMALL_NETS[name]
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (2, *net.input_shape))
    base = generator.twins(net, params, x, 2)
    scaled = generator.twins(net, params, x, 2, alpha_scale=1.5)
    np.testing.assert_allclose(scaled, 1.5**2 * base, rtol=1e-5, atol=1e-6)


def test_bad_settings_raise_clear_errors():
    net = SMALL_NETS["mlp"]
    params = nets.init(jax.random.key(0), net)
    h = jnp.ones((2, 32))
    with pytest.raises(ValueError, match=r"source layer must be in 1..3"):
        generator.twins(net, params, None, 4, h=h)
    for layer in (0, 4):
        with pytest.raises(ValueError, match=rf"source layer must be in 1..3 for this model, got {layer}"):
            generator.twins(net, params, jnp.ones((2, *net.input_shape)), layer)
    with pytest.raises(ValueError, match=r"rho must be in \(0, 1\]"):
        generator.twins(net, params, None, 1, h=h, rho=0.0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        generator.twins(net, params, None, 1, h=h, rho=0.5)
    with pytest.raises(ValueError, match=r"h has shape \(2, 5\) and dtype float32 but features gives \(2, 32\)"):
        generator.twins(net, params, None, 1, h=jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="without a real input x generate from h: pass h="):
        generator.twins(net, params, None, 1)
    with pytest.raises(ValueError, match="no pooling switches: drop use_switches"):
        generator.twins(net, params, None, 1, h=h, use_switches=True)
    np.testing.assert_array_equal(
        generator.twins(net, params, None, 1, h=h, use_switches=False), generator.twins(net, params, None, 1, h=h)
    )
    with pytest.raises(ValueError, match="alpha has 2 entries but 1 linear maps"):
        generator.twins(net, params, None, 1, h=h, alpha=(1.0, 2.0))
    with pytest.raises(ValueError, match="alpha must be None"):
        generator.twins(net, params, None, 1, h=h, alpha="fitted")
    with pytest.raises(ValueError, match="h has shape"):
        generator.twins(net, params, jnp.ones((2, *net.input_shape)), 1, h=jnp.ones((3, 32)))
    with pytest.raises(ValueError, match="smooth_sigma must be >= 0"):
        generator.twins(net, params, None, 1, h=h, smooth_sigma=-1.0)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_twins_of_a_max_pooled_cnn_match_numpy(layer):
    """From h_layer down: unpool at the forward pass's maxima, A^T, calibrated alpha, ReLU above the input."""
    net = nets.cifar_cnn((4, 6, 8), input_shape=(8, 8, 3))
    params = nets.init(jax.random.key(0), net)
    params["hidden"] = [
        {**p, "b": 0.1 * jax.random.normal(jax.random.key(i + 3), p["b"].shape)} for i, p in enumerate(params["hidden"])
    ]
    x = jax.random.normal(jax.random.key(1), (2, *net.input_shape))
    _, hiddens = nets.forward(net, params, x)
    weights = [np.asarray(p["w"], np.float64) for p in params["hidden"]]
    pads = oracles.same_pads(8, 3, 1)

    activations, pre_pool = [np.asarray(x, np.float64)], []
    for w, p in zip(weights, params["hidden"]):
        z = np.maximum(oracles.conv(activations[-1], w, (1, 1), (pads, pads)) + np.asarray(p["b"]), 0.0)
        pre_pool.append(z)
        activations.append(oracles.max_pool(z, 2))
    np.testing.assert_allclose(hiddens[layer - 1].h, activations[layer], rtol=1e-4, atol=1e-5)

    g = activations[layer]
    for l in range(layer, 0, -1):
        w, in_shape = weights[l - 1], activations[l - 1].shape[1:3]
        c = 2.0 if l > 1 else 1.0
        alpha = c / (9 * w.shape[2] * np.mean(w**2))
        g = alpha * oracles.conv_transpose(oracles.max_unpool(g, pre_pool[l - 1], 2), w, in_shape, (1, 1), (pads, pads))
        g = np.maximum(g, 0.0) if l > 1 else g
    np.testing.assert_allclose(generator.twins(net, params, x, layer), g, rtol=1e-4, atol=1e-5)


def test_twins_by_layer_holds_the_real_batch_and_each_layers_twins():
    net = SMALL_NETS["cnn_max"]
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (2, *net.input_shape))
    rows = generator.twins_by_layer(net, params, x, smooth_sigma=0.5)
    assert list(rows) == ["real", "from h1", "from h2", "from h3"]
    np.testing.assert_array_equal(rows["real"], x)
    for layer in (1, 2, 3):
        expected = generator.twins(net, params, x, layer, smooth_sigma=0.5)
        np.testing.assert_allclose(rows[f"from h{layer}"], expected, rtol=1e-6, atol=1e-7)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "field,value",
    [
        ("rho", 0.0), ("rho", 1.5), ("rho", -0.5), ("rho", NAN), ("rho", INF), ("rho", "0.5"),
        ("alpha", -1.0), ("alpha", 0.0), ("alpha", NAN), ("alpha", INF), ("alpha", "fitted"), ("alpha", True),
        ("alpha", (1.0, -2.0)), ("alpha", (1.0, NAN)), ("alpha", ("data",)),
        ("alpha_scale", 0.0), ("alpha_scale", -1.0), ("alpha_scale", NAN), ("alpha_scale", INF),
        ("smooth_sigma", -0.5), ("smooth_sigma", NAN), ("smooth_sigma", INF),
        ("use_switches", 1), ("use_switches", "yes"), ("input_relu", None),
        ("plain_vjp", "tanh"), ("plain_vjp", (1,)),
    ],
)  # fmt: skip
def test_the_record_refuses_each_bad_value_naming_its_field(field, value):
    with pytest.raises(SettingError) as error:
        GeneratorConfig(**{field: value})
    assert error.value.setting == field
    message = str(error.value)
    assert message.startswith(f"{field} ") and message.endswith(".") and "\n" not in message, message


def test_the_record_is_hashable_and_reads_json_lists_as_tuples():
    listed = GeneratorConfig(alpha=[0.5, 2.0], plain_vjp=["tanh"])
    assert listed == GeneratorConfig(alpha=(0.5, 2.0), plain_vjp=("tanh",))
    assert hash(listed) == hash(GeneratorConfig(alpha=(0.5, 2.0), plain_vjp=("tanh",)))
    for alpha in (None, "formula", "data", 0.7, 3):
        hash(GeneratorConfig(alpha=alpha))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rho": 0.6, "key": "key"},
        {"alpha": (0.7, 1.3, 0.9), "alpha_scale": 1.2, "input_relu": True},
        {"alpha": "data", "smooth_sigma": 0.8},
        {"use_switches": False, "alpha": 1.5},
    ],
)
def test_options_and_the_record_give_the_same_twins(options):
    net = SMALL_NETS["cnn_max"]
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (2, *net.input_shape))
    features = lambda v: net.features(params, v, 3)
    key = jax.random.key(2) if options.pop("key", None) else None
    by_options = generator.reverse(features, x, key=key, **options)
    by_record = generator.reverse(features, x, key=key, config=GeneratorConfig(**options))
    np.testing.assert_array_equal(by_options, by_record)
    record_alphas = generator.alphas(features, x, GeneratorConfig(**options))
    for a, b in zip(generator.alphas(features, x, **options), record_alphas, strict=True):
        np.testing.assert_array_equal(a, b)


def test_options_replace_the_fields_of_a_given_record():
    net = SMALL_NETS["mlp"]
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (3, *net.input_shape))
    features, key = lambda v: net.features(params, v, 2), jax.random.key(2)
    base = GeneratorConfig(rho=0.7, alpha_scale=2.0, input_relu=True)
    replaced = generator.reverse(features, x, key=key, config=base, alpha_scale=1.3)
    expected = generator.reverse(features, x, key=key, rho=0.7, alpha_scale=1.3, input_relu=True)
    np.testing.assert_array_equal(replaced, expected)


def test_frozen_alphas_as_traced_arrays_give_the_numbers_twins():
    net = SMALL_NETS["mlp"]
    params = nets.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (3, *net.input_shape))
    features = lambda v: net.features(params, v, 3)
    fitted = generator.alphas(features, x, alpha="data")
    frozen = jax.jit(lambda a: generator.reverse(features, x, alpha=a))(fitted)
    numbers = generator.reverse(features, x, alpha=tuple(map(float, fitted)))
    np.testing.assert_allclose(frozen, numbers, rtol=1e-5, atol=1e-6)  # jit against eager: float rounding only


def test_an_unknown_option_is_one_sentence_naming_it_and_the_valid_ones():
    net = SMALL_NETS["mlp"]
    params = nets.init(jax.random.key(0), net)
    x = jnp.ones((2, *net.input_shape))
    with pytest.raises(InputError) as error:
        generator.twins(net, params, x, 1, sampling_rho=0.5)
    message = str(error.value)
    assert message.startswith("Unknown generator option 'sampling_rho'; the options are h, key, config and rho, alpha")
    assert all(name in message for name in generator.OPTIONS) and "\n" not in message


def test_integer_inputs_and_empty_batches_are_one_sentence():
    net = SMALL_NETS["mlp"]
    params = nets.init(jax.random.key(0), net)
    for dtype in (jnp.uint8, jnp.int32):
        with pytest.raises(InputError, match=rf"^x has dtype {jnp.dtype(dtype).name}, .*convert it first"):
            generator.twins(net, params, jnp.ones((2, *net.input_shape), dtype), 1)
    with pytest.raises(InputError, match=r"^x holds no examples \(shape \(0, 28, 28, 1\)\); pass a batch of at"):
        generator.twins(net, params, jnp.ones((0, *net.input_shape)), 1)
