"""The training recipe's parts, each a setting: the schedule's shape, per-group learning rates, Nesterov momentum,
lookahead, label smoothing, alternating flips and test-time augmentation, against numpy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rev_nets import data, models, nets, shadow, train
from rev_nets.data import augmentation
from rev_nets.errors import SettingError
from rev_nets.train import optimizer


def test_a_linear_schedule_warms_up_from_its_fraction_then_decays_to_its_final_fraction():
    config = train.TrainConfig(
        epochs=10, learning_rate=2.0, schedule="linear", warmup_epochs=2.0, warmup_from=0.2, final_lr_fraction=0.07
    )
    lr = optimizer.learning_rate_schedule(config, steps_per_epoch=10)
    np.testing.assert_allclose(
        [lr(0), lr(10), lr(20), lr(60), lr(100)], [0.4, 1.2, 2.0, 2.0 - 1.86 / 2, 0.14], rtol=1e-6
    )


def test_a_warm_up_fraction_is_the_same_share_of_any_run_and_excludes_warm_up_epochs():
    by_fraction = train.TrainConfig(
        epochs=10, learning_rate=2.0, schedule="linear", warmup_fraction=0.23, warmup_from=0.2
    )
    by_epochs = train.TrainConfig(epochs=10, learning_rate=2.0, schedule="linear", warmup_epochs=2.3, warmup_from=0.2)
    lr, reference = (optimizer.learning_rate_schedule(c, steps_per_epoch=43) for c in (by_fraction, by_epochs))
    np.testing.assert_allclose([lr(s) for s in range(430)], [reference(s) for s in range(430)], rtol=1e-6)
    for epochs in (1, 5, 20):  # The peak comes after 23% of the steps, however long the run.
        rates = np.array([optimizer.learning_rate_schedule(dataclasses.replace(by_fraction, epochs=epochs), 43)(s)
                          for s in range(43 * epochs)])  # fmt: skip
        assert int(np.argmax(rates)) == round(0.23 * 43 * epochs)
    with pytest.raises(SettingError, match="warmup_fraction and warmup_epochs both set the warm-up's length"):
        dataclasses.replace(by_fraction, warmup_epochs=1.0).check(models.nnx_model(Normed))


def test_cosine_ends_at_its_final_fraction():
    config = train.TrainConfig(epochs=2, learning_rate=1.0, final_lr_fraction=0.1)
    assert float(optimizer.learning_rate_schedule(config, 5)(10)) == pytest.approx(0.1)


class Normed(nnx.Module):
    def __init__(self, *, rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.depth, self.input_shape, self.num_classes = 1, (3,), 4

    def features(self, x, layer):
        return nnx.relu(self.norm(self.linear(x)))

    def __call__(self, x):
        return self.features(x, 1)


def test_norm_parameters_move_at_their_scaled_rate_and_decay_as_much_as_the_others():
    model = models.nnx_model(Normed)
    params = model.init(jax.random.key(0))
    config = train.TrainConfig(
        learning_rate=0.1, momentum=0.0, weight_decay=0.01, norm_lr_scale=64.0, schedule="constant"
    )
    tx = optimizer.make_optimizer(config, 10, model.param_groups(params))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    value = lambda tree, *path: np.asarray(tree[path[0]][path[1]][...])
    np.testing.assert_allclose(
        value(updates, "linear", "kernel"), -0.1 * (1 + 0.01 * value(params, "linear", "kernel"))
    )
    norm_bias = value(params, "norm", "bias")
    np.testing.assert_allclose(value(updates, "norm", "bias"), -6.4 * (1 + 0.01 / 64 * norm_bias), rtol=1e-6)
    np.testing.assert_array_equal(value(updates, "norm", "mean"), 0.0)  # statistics are held


@pytest.mark.parametrize("learning_rate", [0.5, 2.0])
def test_decoupled_weight_decay_removes_the_same_share_per_step_at_any_learning_rate(learning_rate):
    """airbench94's decay: at the schedule's peak, with no gradient, every group (norm shifts at 64x the rate
    included) loses ``weight_decay`` of each weight per step, whatever the learning rate; coupled, it scales."""
    model = models.nnx_model(Normed)
    params = jax.tree.map(lambda p: p + 0.5, model.init(jax.random.key(0)))  # BatchNorm's shift starts at 0
    zeros = jax.tree.map(jnp.zeros_like, params)
    for decoupled, share in ((True, 0.002), (False, learning_rate * 0.002)):
        config = train.TrainConfig(
            learning_rate=learning_rate, momentum=0.0, weight_decay=0.002, decoupled_weight_decay=decoupled,
            norm_lr_scale=64.0, schedule="constant",
        )  # fmt: skip
        tx = optimizer.make_optimizer(config, 10, model.param_groups(params))
        updates, _ = tx.update(zeros, tx.init(params), params)
        for layer, name in (("linear", "kernel"), ("norm", "bias")):
            decayed, weight = np.asarray(updates[layer][name][...]), np.asarray(params[layer][name][...])
            np.testing.assert_allclose(decayed, -share * weight, rtol=1e-5, atol=1e-9)


def test_nesterov_momentum_matches_its_numpy_recurrence():
    config = train.TrainConfig(learning_rate=0.1, momentum=0.85, nesterov=True, schedule="constant")
    tx = optimizer.make_optimizer(config, 10)
    params, state, buffer = jnp.zeros(3), None, np.zeros(3)
    state = tx.init(params)
    for g in np.random.default_rng(0).standard_normal((4, 3)):
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        buffer = 0.85 * buffer + g
        np.testing.assert_allclose(updates, -0.1 * (g + 0.85 * buffer), rtol=1e-5)


@pytest.mark.parametrize("total", [6, 7])  # The last step averages (6), or only copies the average (7).
def test_lookahead_follows_airbench94_every_n_steps_and_ends_on_the_slow_average(total):
    """Against airbench94's loop: at steps divisible by ``every`` blend the slow average towards the params and
    copy it back; at the last step (after any blend) copy the slow average into the params."""
    every = 2
    tx = optax.chain(optax.sgd(0.5), optimizer.lookahead(every, total))
    params, state = jnp.asarray([1.0, -2.0]), None
    state = tx.init(params)
    slow, fast = np.array([1.0, -2.0]), np.array([1.0, -2.0])
    grads = np.random.default_rng(1).standard_normal((total, 2))
    for step, g in enumerate(grads, start=1):
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        fast = fast - 0.5 * g
        if step % every == 0:
            slow = slow + (1 - 0.95**every * (step / total) ** 3) * (fast - slow)
            fast = slow.copy()
        if step >= total:
            fast = slow.copy()
        np.testing.assert_allclose(params, fast, rtol=1e-5)
    np.testing.assert_allclose(params, slow, rtol=1e-5)


def test_a_lookahead_period_longer_than_the_run_is_refused_in_one_sentence():
    """Such a run would take no average and end on its initial weights."""
    with pytest.raises(SettingError, match="lookahead_every is 5, longer than the run's 4 steps"):
        optimizer.lookahead(5, 4)
    optimizer.lookahead(4, 4)  # one average, at the last step


def test_a_run_shorter_than_its_lookahead_period_is_refused_before_it_writes_anything(tmp_path):
    net = nets.cifar_cnn(channels=(4, 4, 4))
    images = jnp.zeros((32, 32, 32, 3))
    config = train.TrainConfig(epochs=2, batch_size=16, lookahead_every=5)  # 4 steps
    with pytest.raises(SettingError, match="lookahead_every is 5, longer than the run's 4 steps"):
        train.fit(net, config, data.DeviceSplit(images, jnp.zeros(32, jnp.int32)), {}, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_label_smoothing_matches_the_smoothed_one_hot_cross_entropy():
    logits = jax.random.normal(jax.random.key(0), (5, 4))
    labels = jnp.asarray([0, 1, 2, 3, 1])
    targets = np.full((5, 4), 0.2 / 4) + 0.8 * np.eye(4)[np.asarray(labels)]
    log_p = np.asarray(jax.nn.log_softmax(logits))
    expected = -(targets * log_p).sum(-1).mean()
    assert float(shadow.cross_entropy(logits, labels, 0.2)) == pytest.approx(expected, rel=1e-5)
    assert float(shadow.cross_entropy(logits, labels, 0.0)) == pytest.approx(-log_p[range(5), labels].mean(), rel=1e-5)


def test_alternating_flips_show_each_image_both_ways_every_two_epochs_on_a_fixed_coin():
    images = jnp.asarray(np.random.default_rng(2).standard_normal((32, 4, 4, 1)), jnp.float32)
    indices = jnp.arange(100, 132)
    draw = lambda epoch, key=0: np.asarray(
        augmentation.augment(jax.random.key(key), images, ("alternating_flip",), indices=indices, epoch=epoch, seed=3)
    )
    mirrored = lambda out: np.array([np.array_equal(b, a[:, ::-1]) for a, b in zip(np.asarray(images), out)])
    even, odd = mirrored(draw(0)), mirrored(draw(1))
    assert (even != odd).all() and 8 < even.sum() < 24
    np.testing.assert_array_equal(mirrored(draw(2, key=5)), even)  # the coin is the image's, not the step key's
    np.testing.assert_array_equal(augmentation.alternating_flips(3, indices[:4], 0), even[:4])


def test_test_time_views_weigh_the_mirror_and_both_one_pixel_shifts():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 5, 5, 1)), jnp.float32)
    for level, count in ((0, 1), (1, 2), (2, 6)):
        views = augmentation.test_views(x, level)
        assert len(views) == count and sum(w for w, _ in views) == pytest.approx(1.0)
    weights, views = zip(*augmentation.test_views(x, 2))
    padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(views[1], np.asarray(x)[:, :, ::-1])
    np.testing.assert_array_equal(views[2], padded[:, :5, :5])
    np.testing.assert_array_equal(views[5], padded[:, 2:7, 2:7][:, :, ::-1])
    assert weights == (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)


def _numpy_test_views(x: np.ndarray, level: int) -> list[tuple[float, np.ndarray]]:
    """airbench94's test-time views: the images and their mirrors, at level 2 also both shifted one pixel up-left
    and down-right with the border reflected (the mirror pair at half weight, the shifted pairs at a quarter)."""
    pair = lambda v, w: [(w / 2, v), (w / 2, v[:, :, ::-1])]
    if level == 1:
        return pair(x, 1.0)
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted = (padded[:, :height, :width], padded[:, 2:, 2:])
    return pair(x, 0.5) + [view for v in shifted for view in pair(v, 0.25)]


@pytest.mark.parametrize("level", [1, 2])
def test_test_time_augmentation_is_judged_once_at_the_last_step_on_the_averaged_views(tmp_path, level):
    net = nets.cifar_cnn(channels=(4, 4, 4))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((56, 32, 32, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 56), jnp.int32)
    test = data.DeviceSplit(images[32:], labels[32:])
    config = train.TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, test_time_augmentation=level)
    state, history = train.fit(
        net, config, data.DeviceSplit(images[:32], labels[:32]), {"test": test}, str(tmp_path), figures=False
    )
    assert "test_tta_error" not in history[0] and history[0]["evaluation_time_s"] > 0
    logits = lambda v: net.forward(state.params, jnp.asarray(v)).logits
    error = lambda lg: float(jnp.mean(jnp.argmax(lg, -1) != test.labels))
    averaged = sum(w * logits(v) for w, v in _numpy_test_views(np.asarray(test.images), level))
    assert history[1]["test_tta_error"] == pytest.approx(error(averaged))
    assert history[1]["test_error"] == pytest.approx(error(logits(test.images)))  # Every epoch: the images alone.


@pytest.mark.parametrize(
    "field,value,message",
    [("schedule", "step", "schedule must be one of cosine, linear, constant"),
     ("warmup_from", 1.5, r"warmup_from must be in \[0, 1\)"),
     ("warmup_fraction", 1.0, r"warmup_fraction must be in \[0, 1\)"),
     ("label_smoothing", float("nan"), r"label_smoothing must be in \[0, 1\)"),
     ("norm_lr_scale", 0.0, "norm_lr_scale must be positive"),
     ("lookahead_every", -1, "lookahead_every must be a whole number"),
     ("test_time_augmentation", 3, "test_time_augmentation must be 0"),
     ("nesterov", True, "True only with optimizer='sgd'"),
     ("decoupled_weight_decay", True, "True only with optimizer='sgd'")],
)  # fmt: skip
def test_bad_recipe_settings_are_one_sentence_naming_the_field(field, value, message):
    overrides = {field: value} | ({"optimizer": "adam"} if field in ("nesterov", "decoupled_weight_decay") else {})
    with pytest.raises(SettingError, match=message):
        train.TrainConfig(**overrides).check(models.nnx_model(Normed))
