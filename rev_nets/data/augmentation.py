"""Image augmentation inside the jitted train step: per-example random flips and translations.

Each image of a batch draws its own flip and its own shift from the step's
key (``dm_pix`` on one image, ``vmap`` over the batch), so a resumed run
draws the same images, and a batch sharded over devices stays sharded.
A translation pads the image by ``TRANSLATE_PIXELS`` on each side (reflected,
so no black borders come in) and crops it back at a random offset.
"""

from __future__ import annotations

from collections.abc import Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp

from rev_nets.errors import InputError, SettingError

# flip: horizontal, probability 1/2 per draw; translate: up to TRANSLATE_PIXELS each way; alternating_flip: each
# image's own fixed coin (from the run's seed and its index), inverted on odd epochs (airbench94's), so that every
# two epochs show each image both ways.
KINDS = ("flip", "translate", "alternating_flip")
TRANSLATE_PIXELS = 2


def test_views(images: jax.Array, level: int) -> list[tuple[float, jax.Array]]:
    """Test-time augmentation's weighted views of the batch (airbench94's): level 0 the images; 1 them and their
    mirrors, half each; 2 that pair at half weight, and the pair shifted one pixel up-left and one down-right
    (border reflected) at a quarter each."""
    check((), images.shape[1:], level)
    mirrored = lambda v, w: [(w / 2, v), (w / 2, v[:, :, ::-1])]
    if level == 0:
        return [(1.0, images)]
    if level == 1:
        return mirrored(images, 1.0)
    height, width = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted = [padded[:, :height, :width], padded[:, 2 : height + 2, 2 : width + 2]]
    return mirrored(images, 0.5) + [view for v in shifted for view in mirrored(v, 0.25)]


def check(kinds: Sequence[str], input_shape: Sequence[int], views: int = 0) -> None:
    """Raises ``SettingError`` ("augment ...", "test_time_augmentation ...") for an unknown or repeated kind, two
    kinds of flip, a test-time level ``views`` other than 0, 1 or 2, or inputs that are not images."""
    if views not in (0, 1, 2):
        raise SettingError(
            "test_time_augmentation", f"must be 0 (none), 1 (mirror) or 2 (mirror and shifts), got {views}."
        )
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or len(set(kinds)) != len(kinds) or {"flip", "alternating_flip"} <= set(kinds):
        raise SettingError(
            "augment",
            f"must be some of {', '.join(KINDS)}, each once and one kind of flip (none = off), got {','.join(kinds)!r}.",
        )
    for name, used in (("augment", bool(kinds)), ("test_time_augmentation", bool(views))):
        if used and len(input_shape) != 3:
            raise SettingError(
                name, f"acts on images (height, width, channels), but the inputs are {tuple(input_shape)}."
            )


def translate(key: jax.Array, image: jax.Array, pixels: int = TRANSLATE_PIXELS) -> jax.Array:
    """``image`` (HWC) shifted by up to ``pixels`` rows and columns each way, its border reflected in."""
    padded = jnp.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)), mode="reflect")
    return pix.random_crop(key, padded, image.shape)


def alternating_flips(seed: int, indices: jax.Array, epoch: jax.Array) -> jax.Array:
    """Whether each example (by its index in the split) is mirrored this epoch: its own coin from ``seed``, inverted
    on odd epochs."""
    coin_key = jax.random.fold_in(jax.random.key(seed), ALTERNATING_FLIP_TAG)
    coins = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(coin_key, i)))(indices)
    return coins ^ (epoch % 2 == 1)


ALTERNATING_FLIP_TAG = 0xF11F  # fold_in tag of the alternating flips' coins, apart from the run's other draws


def augment(
    key: jax.Array,
    images: jax.Array,
    kinds: Sequence[str],
    *,
    indices: jax.Array | None = None,
    epoch: jax.Array | int = 0,
    seed: int = 0,
) -> jax.Array:
    """The batch ``images`` (NHWC) flipped and/or translated as ``kinds`` asks, each image its own draw from
    ``key``; an alternating flip reads the images' ``indices`` in their split, the ``epoch`` and the run's ``seed``."""
    check(kinds, images.shape[1:])
    if not kinds:
        return images
    if "alternating_flip" in kinds and indices is None:
        raise InputError("an alternating flip reads each image's index in its split; pass indices= (the batch's rows).")
    mirrored = alternating_flips(seed, indices, epoch) if "alternating_flip" in kinds else None

    def one(image_key, image, mirror):
        flip_key, shift_key = jax.random.split(image_key)
        if "flip" in kinds:
            image = pix.random_flip_left_right(flip_key, image)
        if mirror is not None:
            image = jnp.where(mirror, image[:, ::-1], image)
        if "translate" in kinds:
            image = translate(shift_key, image)
        return image

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images, mirrored)
