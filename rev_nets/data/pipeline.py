"""From loaded splits to device batches: channel statistics, the validation split, standardisation, batch indices.

Per-channel statistics come from the training portion, the validation split
is carved from train with one fixed seed, the arrays live on device, and
each epoch's shuffled batch indices come from an explicit PRNG key.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rev_nets.data.catalog import DataError, Dataset
from rev_nets.data.sources import load
from rev_nets.errors import InputError


class DeviceSplit(NamedTuple):
    """What the training loop uses: device-resident standardised images and labels."""

    images: jax.Array  # float32 standardised NHWC
    labels: jax.Array  # int32


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images on the [0, 1] scale, float32 (C,).

    Exact, via a 256-bin histogram per channel, so no float copy of the data is made.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise InputError(f"channel_stats wants non-empty uint8 NHWC images, got {images.dtype} {images.shape}")
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        p = counts / counts.sum()
        mean = float(p @ values)
        means.append(mean)
        stds.append(float(np.sqrt(p @ (values - mean) ** 2)))
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def standardize(images, mean, std) -> jax.Array:
    """float32 (x/255 - mean)/std per channel, computed on device (uint8 goes over, not float)."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def split_validation(ds: Dataset, num_validation: int, seed: int) -> tuple[Dataset, Dataset]:
    """Deterministic class-agnostic random split of train into (train, validation).

    The validation part is what any tuning should use; the test split stays untouched.
    Both parts keep the original example order.
    """
    n = len(ds.labels)
    if not 0 < num_validation < n:
        raise DataError(
            f"num_validation={num_validation} is out of range for a split of {n} examples; "
            f"choose a number between 1 and {n - 1}."
        )
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(order[:num_validation]), np.sort(order[num_validation:])
    take = lambda idx: Dataset(ds.images[idx], ds.labels[idx], ds.class_names)
    return take(train_idx), take(val_idx)


def label_subset(labels: np.ndarray, num_labels: int, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of ``num_labels`` examples, the same number from each class, drawn with ``seed``.

    A few-label run keeps these examples' labels; the others become its
    unlabelled set. The draw depends on ``seed`` only, so every arm of one
    seed trains on the same subset.
    """
    labels = np.asarray(labels)
    if num_labels < num_classes or num_labels % num_classes:
        raise DataError(
            f"num_labels={num_labels} must be a positive multiple of the {num_classes} classes (the subset "
            "is balanced per class); round it."
        )
    per_class = num_labels // num_classes
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(
                f"num_labels={num_labels} needs {per_class} labelled images of class {c}, but the training "
                f"images outside the validation split hold {len(members)}; give at most "
                f"{num_classes * min(np.bincount(labels, minlength=num_classes))}."
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def split_labels(ds: Dataset, indices: np.ndarray) -> tuple[Dataset, np.ndarray]:
    """The labelled subset ``indices`` of ``ds``, and the other images (unlabelled: their labels are dropped)."""
    keep = np.zeros(len(ds.labels), bool)
    keep[indices] = True
    return Dataset(ds.images[keep], ds.labels[keep], ds.class_names), ds.images[~keep]


VALIDATION_SEED = 0  # One fixed split: every run and every analysis of a run holds out the same images.


def experiment_splits(
    dataset: str, num_validation: int, data_dir: str | None
) -> tuple[dict[str, Dataset], tuple[np.ndarray, np.ndarray]]:
    """``{"train", "validation", "test"}`` as loaded, and the training portion's channel statistics.

    ``num_validation=0`` trains on the whole training split (no "validation"
    entry). Training and every later analysis of a run standardise with
    these statistics, so both see the same inputs.
    """
    full_train = load(dataset, "train", data_dir)
    splits = {"train": full_train}
    if num_validation:
        splits["train"], splits["validation"] = split_validation(full_train, num_validation, seed=VALIDATION_SEED)
    splits["test"] = load(dataset, "test", data_dir)
    return splits, channel_stats(splits["train"].images)


def to_device(ds: Dataset, mean, std) -> DeviceSplit:
    """Standardise a split with the given (training) statistics and keep it on device."""
    images = jax.device_put(standardize(ds.images, mean, std))
    labels = jax.device_put(jnp.asarray(ds.labels, dtype=jnp.int32))
    return DeviceSplit(images, labels)


def device_splits(dataset: str, num_validation: int, data_dir: str | None) -> dict[str, DeviceSplit]:
    """``experiment_splits`` on device: "train", "validation" (unless 0) and "test", all standardised with the
    training portion's statistics."""
    splits, (mean, std) = experiment_splits(dataset, num_validation, data_dir)
    return {name: to_device(split, mean, std) for name, split in splits.items()}


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """int32 (num_batches, batch_size) indices of one shuffled epoch, dropping the remainder.

    jit-able with ``num_examples`` and ``batch_size`` static.
    """
    if not 0 < batch_size <= num_examples:
        raise DataError(
            f"batch_size={batch_size} does not fit {num_examples} examples; choose a batch size between 1 "
            f"and {num_examples}."
        )
    num_batches = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size).astype(jnp.int32)


def sampled_batches(key: jax.Array, num_examples: int, num_batches: int, batch_size: int) -> jax.Array:
    """int32 (num_batches, batch_size) indices drawn uniformly with replacement (few-label runs' batches).

    jit-able with the sizes static.
    """
    return jax.random.randint(key, (num_batches, batch_size), 0, num_examples, dtype=jnp.int32)


def batch_at(split: DeviceSplit, indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gather one batch of (images, labels) on device for a row of ``epoch_batches``."""
    return jnp.take(split.images, indices, axis=0), jnp.take(split.labels, indices, axis=0)
