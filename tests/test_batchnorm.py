"""BatchNorm nets: statistics carried beside the params, trained, saved and resumed; the generator through them."""

import itertools
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
from flax import nnx

from rev_nets import data, generator, models, nets, nnx_zoo, shadow, train
from rev_nets.analysis import reversibility
from rev_nets.consistency import ConsistencyConfig
from rev_nets.errors import SettingError, Stopped
from rev_nets.generator import GeneratorConfig
from rev_nets.train import internals, rundir
from rev_nets.train import steps as train_steps

EPS = 1e-5  # nnx.BatchNorm's epsilon
PADS = oracles.same_pads(8, 3, 1)


class ConvNormNet(nnx.Module):
    """Stages of ``conv -> BatchNorm -> ReLU -> 2x2 max pool`` on 8x8x3 images, then a dense head."""

    def __init__(self, *, rngs, channels=(4, 6), num_classes=3, momentum=0.9):
        widths = (3, *channels)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip(widths, channels)])
        self.norms = nnx.List([nnx.BatchNorm(c, momentum=momentum, rngs=rngs) for c in channels])
        self.head = nnx.Linear(2 * 2 * channels[-1], num_classes, rngs=rngs)
        self.depth, self.input_shape, self.num_classes = len(channels), (8, 8, 3), num_classes

    def features(self, x, layer):
        for conv, norm in zip(self.convs[:layer], self.norms[:layer]):
            x = nnx.max_pool(nnx.relu(norm(conv(x))), (2, 2), strides=(2, 2))
        return x

    def __call__(self, x):
        h = self.features(x, self.depth)
        return self.head(h.reshape(h.shape[0], -1))


MODEL = models.nnx_model(ConvNormNet)


def _params(seed=0):
    """Params with BatchNorm scales, shifts and running statistics drawn away from their initial values."""
    params = MODEL.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    for norm in params["norms"].values():
        size = norm["scale"][...].shape
        norm["scale"][...] = jnp.asarray(rng.uniform(0.5, 1.5, size), jnp.float32)
        norm["bias"][...] = jnp.asarray(rng.normal(0, 0.3, size), jnp.float32)
        norm["mean"][...] = jnp.asarray(rng.normal(0, 0.5, size), jnp.float32)
        norm["var"][...] = jnp.asarray(rng.uniform(0.5, 2.0, size), jnp.float32)
    return params


def _batch(n=12, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(0.5, 2.0, (n, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32))


def _numpy_layers(params, x, training):
    """Each stage's numpy forward: pre-BatchNorm values, statistics used, post-ReLU values and pooled output."""
    stages, a = [], np.asarray(x, np.float64)
    for conv, norm in zip(params["convs"].values(), params["norms"].values()):
        z = oracles.conv(a, np.asarray(conv["kernel"][...], np.float64), (1, 1), (PADS, PADS)) + conv["bias"][...]
        if training:
            mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
        else:
            mean, var = np.asarray(norm["mean"][...], np.float64), np.asarray(norm["var"][...], np.float64)
        scale = np.asarray(norm["scale"][...], np.float64) / np.sqrt(var + EPS)
        r = np.maximum((z - mean) * scale + np.asarray(norm["bias"][...]), 0.0)
        pooled = oracles.max_pool(r, 2)
        stages.append({"z": z, "mean": mean, "var": var, "scale": scale, "r": r, "pooled": pooled, "below": a})
        a = pooled
    return stages


def _numpy_twins(params, x, layer, training):
    """From h_layer down: unpool at the switches, ReLU of the signal, BatchNorm's per-channel scale (no shift), then
    alpha A^T with the calibrated alpha of the map with that scale folded into its weights."""
    stages = _numpy_layers(params, x, training)
    g = stages[layer - 1]["pooled"]
    for l in range(layer, 0, -1):
        stage, w = stages[l - 1], np.asarray(params["convs"][l - 1]["kernel"][...], np.float64)
        folded = w * stage["scale"]  # per output channel
        alpha = (2.0 if l > 1 else 1.0) / (9 * w.shape[2] * np.mean(folded**2))
        signal = np.maximum(oracles.max_unpool(g, stage["r"], 2), 0.0) * stage["scale"]
        g = alpha * oracles.conv_transpose(signal, w, stage["below"].shape[1:3], (1, 1), (PADS, PADS))
    return g


def test_a_training_forward_returns_exactly_its_batchs_statistics_and_evaluation_uses_the_running_ones():
    params, (x, _) = _params(), _batch()
    out = MODEL.forward(params, jnp.asarray(x), key=jax.random.key(0))
    stages = _numpy_layers(params, x, training=True)
    for i, stage in enumerate(stages):
        np.testing.assert_allclose(out.stats["norms"][i]["mean"][...], stage["mean"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.stats["norms"][i]["var"][...], stage["var"], rtol=1e-5, atol=1e-5)
    evaluated = MODEL.forward(params, jnp.asarray(x))
    assert evaluated.stats is None
    np.testing.assert_allclose(
        MODEL.features(params, jnp.asarray(x), 2), _numpy_layers(params, x, training=False)[1]["pooled"], rtol=1e-4
    )
    assert not np.allclose(out.logits, evaluated.logits)  # the two modes normalise by different statistics


def test_the_running_update_averages_at_each_layers_momentum_and_replacing_takes_the_statistics_as_given():
    params, (x, _) = _params(), _batch()
    stats = MODEL.forward(params, jnp.asarray(x), key=jax.random.key(0)).stats
    averaged = MODEL.with_stats(params, stats, average=True)
    replaced = MODEL.with_stats(params, stats)
    for i in range(2):
        for name in ("mean", "var"):
            old, new = params["norms"][i][name][...], stats["norms"][i][name][...]
            np.testing.assert_allclose(averaged["norms"][i][name][...], 0.9 * old + 0.1 * new, rtol=1e-6)
            np.testing.assert_array_equal(replaced["norms"][i][name][...], new)
    chex.assert_trees_all_equal(averaged["convs"], params["convs"])  # only statistics change
    assert models.holds_stats(MODEL) and not models.holds_stats(models.nnx_model("rev_nets.nnx_zoo:residual_cnn"))


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("training", [False, True], ids=["running_statistics", "batch_statistics"])
def test_twins_of_a_batchnorm_net_match_numpy(layer, training):
    params, (x, _) = _params(), _batch()
    if training:  # The training step's generator: this batch's statistics, read from its forward pass.
        stats = MODEL.forward(params, jnp.asarray(x), key=jax.random.key(0)).stats
        params = MODEL.with_stats(params, stats)
    twins = generator.twins(MODEL, params, jnp.asarray(x), layer)
    np.testing.assert_allclose(twins, _numpy_twins(_params(), x, layer, training), rtol=2e-4, atol=1e-5)


def test_the_calibrated_alpha_folds_each_batchnorm_scale_into_its_map():
    params, (x, _) = _params(), _batch()
    alphas = generator.alphas(lambda v: MODEL.features(params, v, 2), jnp.asarray(x))
    stages = _numpy_layers(params, x, training=False)
    for l, (alpha, stage) in enumerate(zip(alphas, stages), start=1):
        w = np.asarray(params["convs"][l - 1]["kernel"][...], np.float64)
        expected = (2.0 if l > 1 else 1.0) / (9 * w.shape[2] * np.mean((w * stage["scale"]) ** 2))
        np.testing.assert_allclose(alpha, expected, rtol=1e-5)
        assert not np.isclose(alpha, (2.0 if l > 1 else 1.0) / (9 * w.shape[2] * np.mean(w**2)), rtol=1e-2)


def test_shadows_gradient_is_backprops_plus_the_fixed_twins_own_and_its_statistics_are_backprops():
    """The twins' forward is a forward of its own: the real term's gradient and the statistics are backprop's."""
    params, (x, y) = _params(), _batch()
    x, y, key = jnp.asarray(x), jnp.asarray(y), jax.random.key(3)
    config = shadow.ShadowConfig(layer=2)
    _, (metrics, (stats,)) = shadow.loss(MODEL, params, x, y, config, key)
    real_key, syn_key, gen_key = jax.random.split(key, 3)
    backprop_value, (_, (backprop_stats,)) = shadow.loss(MODEL, params, x, y, shadow.ShadowConfig(), key)
    chex.assert_trees_all_equal(stats, backprop_stats)
    at_batch = MODEL.with_stats(params, stats)
    x_syn = generator.twins(MODEL, at_batch, x, 2, key=gen_key)
    train_ce = lambda p, v, k: shadow.cross_entropy(MODEL.forward(p, v, key=k).logits, y)
    expected = jax.tree.map(
        lambda a, b: (a + b) / 2, jax.grad(train_ce)(params, x, real_key), jax.grad(train_ce)(params, x_syn, syn_key)
    )
    grads = jax.grad(lambda p: shadow.loss(MODEL, p, x, y, config, key)[0])(params)
    chex.assert_trees_all_close(grads, expected, rtol=1e-4, atol=1e-6)
    backprop_grads = jax.grad(lambda p: shadow.loss(MODEL, p, x, y, shadow.ShadowConfig(), key)[0])(params)
    chex.assert_trees_all_close(backprop_grads, jax.grad(train_ce)(params, x, real_key), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["ce_real"], backprop_value, rtol=1e-6)


def test_term_gradients_take_shadows_two_terms_apart_and_their_weighted_mean_is_the_losss_gradient():
    params, (x, y) = _params(), _batch()
    x, y, key = jnp.asarray(x), jnp.asarray(y), jax.random.key(3)
    config = shadow.ShadowConfig(layer=2, weight=0.25)
    g_real, g_twin = shadow.term_gradients(MODEL, params, x, y, config, key, label_smoothing=0.1)
    real_key, syn_key, _ = jax.random.split(key, 3)
    x_syn = generator.twins(MODEL, MODEL.with_stats(params, MODEL.forward(params, x, key=real_key).stats), x, 2)
    train_ce = lambda p, v, k: shadow.cross_entropy(MODEL.forward(p, v, key=k).logits, y, 0.1)
    zero_fixed = lambda label, leaf: jax.tree.map(jnp.zeros_like, leaf) if label == "fixed" else leaf
    held = lambda g: jax.tree.map(zero_fixed, MODEL.param_groups(g), g)  # the running statistics get none
    chex.assert_trees_all_close(g_real, held(jax.grad(train_ce)(params, x, real_key)), rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(g_twin, held(jax.grad(train_ce)(params, x_syn, syn_key)), rtol=1e-4, atol=1e-6)
    held_loss = lambda p: shadow.loss(MODEL, models.hold_fixed(MODEL, p), x, y, config, key, label_smoothing=0.1)[0]
    mean = jax.tree.map(lambda a, b: (a + 0.25 * b) / 1.25, g_real, g_twin)
    chex.assert_trees_all_close(jax.grad(held_loss)(params), mean, rtol=1e-5, atol=1e-7)
    assert not np.allclose(g_real["convs"][0]["kernel"][...], g_twin["convs"][0]["kernel"][...])


def _splits(n_train=48, n_eval=20):
    (x, y), (u, v) = _batch(n_train, seed=4), _batch(n_eval, seed=5)
    return (x, y), {"test": (u, v)}


def _config(**overrides):
    base = {
        "epochs": 2,
        "batch_size": 12,
        "learning_rate": 0.05,
        "log_every": 2,
        "shadow": shadow.ShadowConfig(layer=2),
    }
    return train.TrainConfig(**(base | overrides))


def _stats_of(params):
    return nnx.filter_state(params, nnx.BatchStat)


def test_one_step_of_shadow_and_of_backprop_leave_the_same_running_statistics():
    (x, y), _ = _splits()
    states = {
        name: train.fit_in_memory(MODEL, _config(epochs=1, shadow=config), (x, y), steps=1)[0]
        for name, config in {"shadow": shadow.ShadowConfig(layer=2), "backprop": shadow.ShadowConfig()}.items()
    }
    chex.assert_trees_all_equal(_stats_of(states["shadow"].params), _stats_of(states["backprop"].params))
    initial = _stats_of(MODEL.init(jax.random.key(0)))
    assert not np.allclose(
        _stats_of(states["shadow"].params)["norms"][0]["mean"][...], initial["norms"][0]["mean"][...]
    )


def test_the_optimizer_moves_parameters_only_so_weight_decay_leaves_the_statistics_to_their_update():
    (x, y), _ = _splits()
    states = {
        decay: train.fit_in_memory(
            MODEL, _config(epochs=1, weight_decay=decay, shadow=shadow.ShadowConfig()), (x, y), steps=1
        )[0]
        for decay in (0.0, 0.5)
    }
    chex.assert_trees_all_equal(_stats_of(states[0.5].params), _stats_of(states[0.0].params))
    trained = {decay: nnx.filter_state(state.params, nnx.Param) for decay, state in states.items()}
    with pytest.raises(AssertionError):  # The decay acts, on the parameters.
        chex.assert_trees_all_close(trained[0.5], trained[0.0], rtol=1e-3)
    moved = jax.tree.leaves(states[0.5].opt_state)
    assert sum(leaf.size for leaf in moved if leaf.ndim) == sum(
        leaf.size for leaf in jax.tree.leaves(trained[0.5])
    )  # momentum buffers for the parameters alone


@pytest.mark.parametrize("kind", ["twin_updated", "joint"])
def test_a_step_folds_each_statistics_the_loss_gives_into_the_running_averages_in_order(kind):
    """``twin_updated``: the real batch's, then the twins'; ``joint``: the real and twin batch as one."""
    (x, y), _ = _splits()
    config = shadow.ShadowConfig(layer=2, twin_statistics=kind)
    state, _ = train.fit_in_memory(MODEL, _config(epochs=1, batch_size=len(x), shadow=config), (x, y), steps=1)
    params = MODEL.init(jax.random.key(0))
    # One batch of every image: its statistics depend neither on the order the step drew them in nor (twins made
    # without sampling) on the key.
    given = [
        shadow.loss(MODEL, params, jnp.asarray(x), jnp.asarray(y), config, jax.random.key(k))[1][1] for k in (0, 1)
    ]
    chex.assert_trees_all_close(*given, rtol=1e-5, atol=1e-6)
    assert len(given[0]) == (2 if kind == "twin_updated" else 1)
    expected = params
    for stats in given[0]:
        expected = MODEL.with_stats(expected, stats, average=True)
    chex.assert_trees_all_close(_stats_of(state.params), _stats_of(expected), rtol=1e-4, atol=1e-6)
    if kind == "twin_updated":  # The twins' statistics alone are not what the step keeps.
        alone = MODEL.with_stats(params, given[0][-1], average=True)
        with pytest.raises(AssertionError):
            chex.assert_trees_all_close(_stats_of(state.params), _stats_of(alone), rtol=1e-4, atol=1e-6)


def _device_splits():
    (x, y), evals = _splits()
    as_split = lambda pair: data.DeviceSplit(jnp.asarray(pair[0]), jnp.asarray(pair[1]))
    return as_split((x, y)), {name: as_split(pair) for name, pair in evals.items()}


def test_a_batchnorm_run_saves_its_statistics_resumes_to_the_same_numbers_and_reads_back(tmp_path):
    """Stopped mid-epoch (step 5 of 12) and resumed, images augmented: the same metrics and statistics as an
    uninterrupted run (the same draws), and the saved statistics are what evaluation used."""
    train_split, evals = _device_splits()
    config = _config(epochs=3, augment=("flip", "translate"))
    final, uninterrupted = train.fit(MODEL, config, train_split, evals, str(tmp_path / "ref"), figures=False)
    workdir, polls = str(tmp_path / "run"), itertools.count()
    with pytest.raises(Stopped):
        train.fit(MODEL, config, train_split, evals, workdir, figures=False, stop=lambda: next(polls) == 5 or None)
    resumed_state, resumed = train.fit(MODEL, config, train_split, evals, workdir, figures=False)
    strip = lambda lines: [{k: v for k, v in l.items() if not k.endswith("_s") and k != "images_per_s"} for l in lines]
    assert strip(resumed) == strip(uninterrupted)
    chex.assert_trees_all_equal(_stats_of(resumed_state.params), _stats_of(final.params))
    run = rundir.load_run(workdir, factory=models.factory_name(ConvNormNet))
    saved = run.params(run.steps[-1])
    chex.assert_trees_all_close(_stats_of(saved), jax.device_get(_stats_of(final.params)))
    logits = run.model.forward(saved, evals["test"].images).logits
    assert float(shadow.error_rate(logits, evals["test"].labels)) == pytest.approx(uninterrupted[-1]["test_error"])


def test_consistency_on_a_batchnorm_net_is_one_sentence():
    config = _config(num_labels=12, consistency=ConsistencyConfig(kind="shadow", layer=2))
    with pytest.raises(SettingError, match="consistency.kind is not defined for a net with BatchNorm"):
        config.check(MODEL)


def _module_with(params):
    module = ConvNormNet(rngs=nnx.Rngs(0))
    nnx.update(module, params)
    return module


def test_a_module_in_training_mode_reverses_with_its_batchs_statistics_and_keeps_its_running_ones():
    params, (x, _) = _params(), _batch()
    module = _module_with(params)
    running = jax.tree.map(np.array, nnx.state(module, nnx.BatchStat))
    twins = generator.reverse(lambda v: module.features(v, 2), jnp.asarray(x))
    np.testing.assert_allclose(twins, _numpy_twins(params, x, 2, training=True), rtol=2e-4, atol=1e-5)
    chex.assert_trees_all_equal(jax.tree.map(np.array, nnx.state(module, nnx.BatchStat)), running)
    assert module.norms[0].use_running_average is False and module.norms[0].momentum == 0.9
    holder, held = types.SimpleNamespace(module=module), {"net": module}  # A plain object and a dict, found alike.
    for reached in (lambda v: holder.module.features(v, 2), lambda v: held["net"].features(v, 2)):
        np.testing.assert_array_equal(generator.reverse(reached, jnp.asarray(x)), twins)
    module.eval()  # evaluation mode: the running statistics
    twins = generator.reverse(lambda v: module.features(v, 2), jnp.asarray(x))
    np.testing.assert_allclose(twins, _numpy_twins(params, x, 2, training=False), rtol=2e-4, atol=1e-5)


def test_the_data_fitted_alpha_of_a_batchnorm_net_is_fitted_at_the_batchs_statistics():
    """``make_alpha_fit`` (``alpha="data"``) on a BatchNorm net: the alphas of the module reversed directly in
    training mode (checked against numpy above), not those at the running averages."""
    params, (x, y) = _params(), _batch()
    config = train.TrainConfig(
        batch_size=12, shadow=shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="data"))
    )
    indices = jnp.arange(len(x))
    fit = train_steps.make_alpha_fit(MODEL, config, internals.data_mesh())
    fitted = fit(params, data.DeviceSplit(x, y), indices)
    module = _module_with(params)
    at_batch = generator.alphas(lambda v: module.features(v, 2), jnp.asarray(x), config.shadow.generator)
    np.testing.assert_allclose(fitted, at_batch, rtol=1e-5)
    module.eval()
    at_running = generator.alphas(lambda v: module.features(v, 2), jnp.asarray(x), config.shadow.generator)
    assert not np.allclose(fitted, at_running, rtol=1e-2)


class DroppedHidden(nnx.Module):
    def __init__(self, *, rngs):
        self.linear, self.dropout = nnx.Linear(4, 4, rngs=rngs), nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, v):
        return nnx.relu(self.dropout(self.linear(v)))


def test_reversing_a_module_in_a_state_the_generator_cannot_hold_is_one_sentence():
    module = _module_with(_params())
    with pytest.raises(
        ValueError, match="^features calls an NNX module in training mode .* under a JAX transformation"
    ):
        jax.jit(lambda v: generator.reverse(lambda u: module.features(u, 2), v))(jnp.asarray(_batch()[0]))
    dropped = DroppedHidden(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^features changes a Flax NNX module's state .*\(module.eval\(\)\)"):
        generator.reverse(dropped, jnp.ones((2, 4)))
    dropped.eval()
    assert generator.reverse(dropped, jnp.ones((2, 4))).shape == (2, 4)
    both = NormedThenDropped(rngs=nnx.Rngs(0))  # Its statistics' forward draws dropout; the refusal undoes it.
    streams = jax.tree.map(_key_data, nnx.state(nnx.clone(both), nnx.RngState))
    with pytest.raises(ValueError, match=r"^features changes a Flax NNX module's state"):
        generator.reverse(both, jnp.arange(8.0).reshape(2, 4))
    chex.assert_trees_all_equal(jax.tree.map(_key_data, nnx.state(both, nnx.RngState)), streams)
    asked = NormedThenDropped(rngs=nnx.Rngs(0), at_call=True)
    asked.eval()
    with pytest.raises(
        ValueError, match=r"^features updates batch statistics as it runs: an nnx.BatchNorm in training"
    ):
        generator.reverse(asked, jnp.arange(8.0).reshape(2, 4))


def _key_data(a):
    """An RNG stream's key or count as numbers, comparable."""
    return np.asarray(jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a)


class NormedThenDropped(nnx.Module):
    """Linear, BatchNorm, dropout, ReLU; with ``at_call``, BatchNorm is asked for batch statistics in the call."""

    def __init__(self, *, rngs, at_call=False):
        self.linear, self.norm = nnx.Linear(4, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs)
        self.dropout, self.at_call = nnx.Dropout(0.5, rngs=rngs), at_call

    def __call__(self, v):
        h = self.norm(self.linear(v), use_running_average=False) if self.at_call else self.norm(self.linear(v))
        return nnx.relu(self.dropout(h))


def test_twin_statistics_variants_feed_the_running_averages_what_they_say():
    params, (x, y) = _params(), _batch()
    x, y, key = jnp.asarray(x), jnp.asarray(y), jax.random.key(3)
    gen_key, syn_key = jax.random.split(key, 3)[2], jax.random.split(key, 3)[1]
    run = lambda kind: shadow.loss(MODEL, params, x, y, shadow.ShadowConfig(layer=2, twin_statistics=kind), key)
    (_, (_, (separate,))), (_, (_, (real, twin))), (_, (metrics, (joint,))) = map(
        run, ("separate", "twin_updated", "joint")
    )
    chex.assert_trees_all_equal(separate, real)
    x_syn = generator.twins(MODEL, MODEL.with_stats(params, real), x, 2, key=gen_key)
    chex.assert_trees_all_close(twin, MODEL.forward(params, x_syn, key=syn_key).stats, rtol=1e-5, atol=1e-6)
    both = MODEL.forward(params, jnp.concatenate([x, x_syn]), key=syn_key)
    chex.assert_trees_all_close(joint, both.stats, rtol=1e-5, atol=1e-6)
    logits_real = both.logits[: len(x)]
    np.testing.assert_allclose(metrics["ce_real"], shadow.cross_entropy(logits_real, y), rtol=1e-5)
    with pytest.raises(SettingError, match="twin_statistics must be one of separate, joint, twin_updated"):
        shadow.ShadowConfig(layer=2, twin_statistics="mixed").check(MODEL)
    for kind in ("joint", "twin_updated"):  # Twins in the statistics from step 0: no plain backprop before a start.
        with pytest.raises(SettingError, match=f"'{kind}' puts the twins into the batch statistics from the first"):
            shadow.ShadowConfig(layer=2, twin_statistics=kind, start_epoch=1.0).check(MODEL)
    shadow.ShadowConfig(layer=2, twin_statistics="separate", start_epoch=1.0).check(MODEL)
    for layer, model, absent in (
        (0, MODEL, "SHADOW is off"),
        (2, nets.mnist_mlp(width=4), "this model has no BatchNorm"),
    ):
        with pytest.raises(SettingError, match=f"'joint' says which batch statistics .* but {absent}.*'separate'"):
            shadow.ShadowConfig(layer=layer, twin_statistics="joint").check(model)


def test_the_synthetic_test_judges_without_dropout():
    """A net with BatchNorm and dropout: its twins are judged as the same net without dropout judges them."""
    dropped, plain = (
        models.nnx_model(nnx_zoo.residual_cnn, channels=(4, 8), batch_norm=True, dropout=d) for d in (0.9, 0.0)
    )
    params, x = plain.init(jax.random.key(0)), jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    config = shadow.ShadowConfig(layer=2, generator=GeneratorConfig(alpha="formula"))  # residual sums: no calibration
    judged = [reversibility.synthetic_logits(m, params, x, config=config) for m in (dropped, plain)]
    chex.assert_trees_all_close(*judged, rtol=1e-6)


def _numpy_logits(params, x, training):
    pooled = _numpy_layers(params, x, training)[-1]["pooled"]
    head = params["head"]
    return pooled.reshape(len(x), -1) @ np.asarray(head["kernel"][...], np.float64) + head["bias"][...]


def test_the_synthetic_test_judges_the_twins_by_the_running_averages_and_by_their_own_batch():
    params, (x, y) = _params(), _batch(n=16)
    first = params["norms"][0]["mean"]
    first[...] = first[...] - 3.0  # Running means far off the twins' own (the reverse takes scales only).
    config = shadow.ShadowConfig(layer=2)
    logits = reversibility.synthetic_logits(MODEL, params, jnp.asarray(x), config=config)
    twins = _numpy_twins(params, x, 2, training=False)  # The evaluation's twins: the running averages' scales.
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4)
    close(logits["real"], _numpy_logits(params, x, training=False))
    close(logits["synthetic, running averages"], _numpy_logits(params, twins, training=False))
    close(logits["synthetic, own batch statistics"], _numpy_logits(params, twins, training=True))
    with pytest.raises(AssertionError):  # The choice of statistics matters here.
        close(logits["synthetic, running averages"], logits["synthetic, own batch statistics"])
    errors = reversibility.synthetic_errors(MODEL, params, jnp.asarray(x), y, config=config)
    assert errors["real"] == np.mean(np.argmax(logits["real"], -1) != y)
    mlp = nets.mnist_mlp(width=8)
    assert (
        reversibility.synthetic_logits(mlp, mlp.init(jax.random.key(0)), jnp.zeros((2, 28, 28, 1)), config=config) == {}
    )
