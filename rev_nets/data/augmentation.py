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

from rev_nets.errors import SettingError

KINDS = ("flip", "translate")  # horizontal flips with probability 1/2; shifts of up to TRANSLATE_PIXELS each way
TRANSLATE_PIXELS = 2


def check(kinds: Sequence[str], input_shape: Sequence[int]) -> None:
    """Raises ``SettingError`` ("augment ...") for an unknown or repeated kind, or images it cannot act on."""
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise SettingError(
            "augment", f"must be some of {', '.join(KINDS)}, each once (none = off), got {','.join(kinds)!r}."
        )
    if kinds and len(input_shape) != 3:
        raise SettingError("augment", f"acts on images (height, width, channels), but the inputs are {tuple(input_shape)}.")


def translate(key: jax.Array, image: jax.Array, pixels: int = TRANSLATE_PIXELS) -> jax.Array:
    """``image`` (HWC) shifted by up to ``pixels`` rows and columns each way, its border reflected in."""
    padded = jnp.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)), mode="reflect")
    return pix.random_crop(key, padded, image.shape)


def augment(key: jax.Array, images: jax.Array, kinds: Sequence[str]) -> jax.Array:
    """The batch ``images`` (NHWC) with each image flipped and/or translated as ``kinds`` asks, its own draw each."""
    if not kinds:
        return images

    def one(image_key, image):
        flip_key, shift_key = jax.random.split(image_key)
        if "flip" in kinds:
            image = pix.random_flip_left_right(flip_key, image)
        if "translate" in kinds:
            image = translate(shift_key, image)
        return image

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)
