"""A run's splits in a few numbers and hashes, so that a resume on other data is told apart from one on the same.

Per split: shape, dtype, the count of each label, a hash of all labels (order
included) and a hash of a fixed sample of about a million pixels spread over
every image. Content only, never a path: a moved copy of the same files has
the same fingerprint.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rev_nets.data.catalog import Dataset

PIXEL_SAMPLE = 1 << 20  # Pixels hashed per split: ~20 per image of MNIST or CIFAR, milliseconds to read.
FIELDS = ("shape", "dtype", "label_counts", "labels", "pixels")  # Compared in this order.
_SAYS = {
    "label_counts": "the label counts differ",
    "labels": "the labels differ (same counts, other order)",
    "pixels": "the pixel sample differs (images changed)",
}


def fingerprint(splits: Mapping[str, Dataset]) -> dict[str, dict[str, Any]]:
    """Split name -> its fingerprint (JSON-ready), for ``config.json``."""
    return {name: _split_fingerprint(split) for name, split in splits.items()}


def _split_fingerprint(split: Dataset) -> dict[str, Any]:
    images, labels = np.asarray(split.images), np.asarray(split.labels, np.int64)
    return {
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "label_counts": np.bincount(labels, minlength=len(split.class_names)).tolist(),
        "labels": _sha256(labels),
        "pixels": _sha256(pixel_sample(images)),
    }


def pixel_sample(images: np.ndarray) -> np.ndarray:
    """About ``PIXEL_SAMPLE`` values of the flat images, every ``stride``-th, ``stride`` prime to the values per
    image so that the sampled place moves from image to image (every channel and place is sampled); a split of
    fewer than ``PIXEL_SAMPLE`` images has every image sampled."""
    flat = images.reshape(-1)
    per_image = max(math.prod(images.shape[1:]), 1)
    stride = max(flat.size // PIXEL_SAMPLE, 1)
    while math.gcd(stride, per_image) != 1:
        stride += 1
    return flat[::stride]


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, one clause per change with the splits it is found in, e.g. "the pixel
    sample differs (images changed) in the train and test splits"; empty when they agree."""
    where: dict[str, list[str]] = {}
    for name in [*current, *(name for name in saved if name not in current)]:
        if name in saved and name in current:
            changes = _changes(saved[name], current[name])
        else:
            changes = ["new" if name in current else "missing"]
        for change in changes:
            where.setdefault(change, []).append(name)
    return [_clause(change, names) for change, names in where.items()]


def _changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One split's changes: a changed shape or dtype with both values (the other fields follow from it), else the
    labels' and the pixels' changes."""
    changed = [field for field in FIELDS if saved.get(field) != current.get(field)]
    if changed and changed[0] in ("shape", "dtype"):
        field = changed[0]
        show = lambda value: "x".join(map(str, value)) if field == "shape" else value
        return [f"the {field} differs ({show(saved.get(field))} -> {show(current.get(field))})"]
    return [_SAYS[field] for field in changed if not (field == "labels" and "label_counts" in changed)]


def _clause(change: str, names: list[str]) -> str:
    """``change`` with the splits it is found in: "the labels differ in the train and test splits"."""
    splits = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    plural = "s" if len(names) > 1 else ""
    if change in ("new", "missing"):
        return f"the {splits} split{plural} {'are' if plural else 'is'} {change}"
    return f"{change} in the {splits} split{plural}"
