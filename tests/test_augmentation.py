"""Augmentation in the train step: per-example flips and translations, keyed, exact, and content-preserving."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rev_nets import data, nets, shadow, train
from rev_nets.data import augmentation
from rev_nets.errors import InputError, SettingError
from rev_nets.train import internals
from rev_nets.train import steps as train_steps

PIXELS = augmentation.TRANSLATE_PIXELS


def _images(n=64, size=8, channels=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, size, size, channels)), jnp.float32)


def _translations(image: np.ndarray) -> list[np.ndarray]:
    """Every crop of the reflect-padded image: the translations a draw may give (numpy, by hand)."""
    padded = np.pad(image, ((PIXELS, PIXELS), (PIXELS, PIXELS), (0, 0)), mode="reflect")
    h, w = image.shape[:2]
    return [padded[i : i + h, j : j + w] for i in range(2 * PIXELS + 1) for j in range(2 * PIXELS + 1)]


def test_no_kinds_is_the_identity_and_shapes_and_dtypes_are_kept():
    x = _images()
    assert data.augment(jax.random.key(0), x, ()) is x
    y = data.augment(jax.random.key(0), x, ("flip", "translate"))
    assert y.shape == x.shape and y.dtype == x.dtype


def test_the_key_fixes_the_draw_and_jit_agrees():
    x, kinds = _images(), ("flip", "translate")
    first = data.augment(jax.random.key(1), x, kinds)
    np.testing.assert_array_equal(first, data.augment(jax.random.key(1), x, kinds))
    np.testing.assert_array_equal(first, jax.jit(data.augment, static_argnums=2)(jax.random.key(1), x, kinds))
    assert not np.array_equal(first, data.augment(jax.random.key(2), x, kinds))


def test_flips_are_exact_mirrors_drawn_per_example():
    x = np.asarray(_images())
    y = np.asarray(data.augment(jax.random.key(3), jnp.asarray(x), ("flip",)))
    flipped = [np.array_equal(b, a[:, ::-1]) for a, b in zip(x, y)]
    kept = [np.array_equal(b, a) for a, b in zip(x, y)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is itself or its exact mirror
    assert 16 < sum(flipped) < 48  # about half of 64, each its own draw


def test_a_translation_is_one_of_the_shifts_of_the_image_with_its_border_reflected():
    x = np.asarray(_images(n=32))
    y = np.asarray(data.augment(jax.random.key(4), jnp.asarray(x), ("translate",)))
    offsets = []
    for a, b in zip(x, y):
        matches = [i for i, shifted in enumerate(_translations(a)) if np.array_equal(b, shifted)]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 5  # the shifts are drawn per example, over the whole range


@pytest.mark.parametrize(
    "kinds,shape,message",
    [(("blur",), (8, 8, 3), "augment must be some of flip, translate"),
     (("flip", "flip"), (8, 8, 3), "each once"),
     (("translate",), (784,), r"acts on images \(height, width, channels\)")],
)  # fmt: skip
def test_bad_kinds_and_inputs_that_are_not_images_are_one_sentence(kinds, shape, message):
    with pytest.raises(SettingError, match=message):
        augmentation.check(kinds, shape)
    with pytest.raises(SettingError, match=message):  # Called directly, as from a notebook.
        data.augment(jax.random.key(0), jnp.zeros((2, *shape)), kinds)


def test_called_directly_an_alternating_flip_without_indices_and_an_unknown_test_time_level_are_one_sentence():
    with pytest.raises(InputError, match="reads each image's index in its split; pass indices="):
        data.augment(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), ("alternating_flip",))
    with pytest.raises(SettingError, match=r"test_time_augmentation must be 0 \(none\), 1 \(mirror\) or 2"):
        augmentation.test_views(jnp.zeros((2, 8, 8, 3)), 3)


def test_shadows_twins_are_made_from_the_batch_as_augmented():
    """One train step's real and synthetic cross-entropies are ``shadow.loss``'s on the augmented batch (its own
    draw from the step key), not on the batch as stored: the twins come from what the net was shown."""
    net = nets.mnist_mlp(width=16)
    config = train.TrainConfig(batch_size=8, augment=("flip", "translate"), shadow=shadow.ShadowConfig(layer=2))
    x, y = _images(8, size=28, channels=1), jnp.arange(8) % 10
    indices, key = jnp.arange(8), jax.random.key(3)
    state = internals.create_state(net, config, 1)
    _, acc = internals.train_step(
        net, config, state, internals.zero_metrics(config), data.DeviceSplit(x, y), indices, key, steps_per_epoch=1
    )
    augment_key = jax.random.fold_in(key, train_steps.AUGMENT_STREAM)
    augmented = data.augment(augment_key, x, config.augment, indices=indices, epoch=0, seed=config.seed)
    assert not np.allclose(augmented, x)
    for images, shown in ((augmented, True), (x, False)):
        _, (metrics, _) = shadow.loss(net, state.params, images, y, config.shadow, key)
        for name in ("ce_real", "ce_synthetic"):
            assert np.isclose(acc[name], metrics[name], rtol=1e-5) == shown, (name, shown)
