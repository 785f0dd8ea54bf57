"""The library's own checks of what it is given: model arguments, generator settings as arrays, weights that are
not numbers; and the two lines a run prints instead of passing silently (a clamped batch, a model at chance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rev_nets import generator, models, nets, shadow, train
from rev_nets.analysis import random_like
from rev_nets.errors import InputError, SettingError
from rev_nets.train.loop import chance_warning


@pytest.mark.parametrize(
    "arguments,message",
    [
        (
            {"nosuch": 1},
            r"^arguments do not fit rev_nets.nets:mnist_mlp \(got an unexpected keyword argument 'nosuch'\)",
        ),
        ({"width": 0}, r"^arguments.width must be a whole number >= 1, got 0\.$"),
        ({"depth": 2.5}, r"^arguments.depth must be a whole number >= 1, got 2.5\.$"),
        ({"num_classes": 1}, r"^arguments.num_classes must be a whole number >= 2, got 1\.$"),
    ],
)
def test_model_arguments_are_refused_naming_the_argument(arguments, message):
    with pytest.raises(SettingError, match=message):
        models.build_model(models.ModelConfig("rev_nets.nets:mnist_mlp", arguments))


def test_cnn_channels_are_whole_numbers():
    for channels in ([], [8, 0], [8, True], "abc"):
        with pytest.raises(SettingError, match="^channels must be one or more whole numbers >= 1"):
            nets.cifar_cnn(channels=channels)


def test_a_concrete_alpha_array_is_checked_like_a_number():
    w = jax.random.normal(jax.random.key(0), (4, 3))
    features = lambda x: jax.nn.relu(x @ w)
    x = jnp.ones((2, 4))
    for alpha in (jnp.array(-1.0), np.array([0.0]), (jnp.array(np.nan),)):
        with pytest.raises(SettingError, match="^alpha must be"):
            generator.reverse(features, x, alpha=alpha)
    good = generator.reverse(features, x, alpha=jnp.array(2.0))
    assert jnp.array_equal(good, generator.reverse(features, x, alpha=2.0))
    traced = jax.jit(lambda a: generator.reverse(features, x, alpha=a))(jnp.array(2.0))  # Its value is unknown.
    assert jnp.allclose(traced, good)


def test_weights_that_are_not_numbers_are_refused_before_any_calibration(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, w=np.full((8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match=r"^broken/w \(broken.npz\) holds 64 of 64 weights that are NaN or infinite"):
        random_like.report([], [str(path)], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _history(*errors):
    return [{"epoch": i + 1, "validation_error": error} for i, error in enumerate(errors)]


def test_the_chance_warning_comes_once_after_three_rounds_at_chance():
    assert chance_warning(_history(0.9, 0.89), 10, "validation") is None
    warning = chance_warning(_history(0.9, 0.89, 0.885), 10, "validation")
    assert warning.startswith("warning: validation error has stayed at chance (90% for 10 classes) for 3 evaluations")
    assert "\n" not in warning
    assert chance_warning(_history(0.9, 0.89, 0.885, 0.9), 10, "validation") is None  # Said once.
    assert chance_warning(_history(0.9, 0.5, 0.9, 0.9), 10, "validation") is None  # Not three in a row.
    assert chance_warning(_history(0.9, 0.5, 0.9, 0.9, 0.95), 10, "validation") is not None
    assert chance_warning(_history(0.5, 0.4, 0.3), 10, "validation") is None
    assert chance_warning(_history(0.98, 0.98, 0.98), 100, "validation") is not None  # 99% chance, 2% margin.
    assert chance_warning(_history(0.9, 0.9, 0.9), 10, None) is None  # No evaluation split.
    assert "the model is not learning" in warning


def test_the_chance_warning_tells_a_model_that_learns_its_training_batches_from_one_that_learns_nothing():
    learned = [line | {"train_error_real": 0.02} for line in _history(0.9, 0.9, 0.9)]
    warning = chance_warning(learned, 10, "validation")
    assert "training error is 2%: the model learns its training batches but not the validation images" in warning
    assert "\n" not in warning
    unlearned = [line | {"train_error_real": 0.88} for line in _history(0.9, 0.9, 0.9)]
    assert "the model is not learning" in chance_warning(unlearned, 10, "validation")


def test_a_run_says_when_it_clamps_the_batch_and_when_it_sits_at_chance(capsys):
    model = nets.mnist_mlp(width=8)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((40, 28, 28, 1)), jnp.float32)
    labels = jnp.asarray(np.arange(40) % 10, jnp.int32)
    config = train.TrainConfig(
        epochs=3, steps=3, batch_size=64, num_labels=20, learning_rate=1e-6, shadow=shadow.ShadowConfig(layer=0)
    )
    train.fit_in_memory(model, config, (images[:20], labels[:20]), {"validation": (images[20:], labels[20:])})
    out = capsys.readouterr().out.splitlines()
    assert out.count("note: batch_size=64 > 20 labels: labelled batches hold 20.") == 1
    assert sum(line.startswith("warning: validation error has stayed at chance") for line in out) == 1
