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
    "label_counts": "label counts differ",
    "labels": "labels differ (same counts, other order)",
    "pixels": "pixel sample differs (images changed)",
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
    """Every ``stride``-th value of the flat images, ``stride`` prime to the values per image, so that the sampled
    position moves from image to image (all channels and places are sampled) and every image is sampled."""
    flat = images.reshape(-1)
    per_image = max(math.prod(images.shape[1:]), 1)
    stride = max(flat.size // PIXEL_SAMPLE, 1)
    while math.gcd(stride, per_image) != 1:
        stride += 1
    return flat[::stride]


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, one clause per split, e.g. "the test split's pixel sample differs
    (images changed)"; empty when they agree."""
    found = []
    for name in [*saved, *(name for name in current if name not in saved)]:
        if name not in current or name not in saved:
            found.append(f"the {name} split is {'missing' if name in saved else 'new'}")
            continue
        changed = [field for field in FIELDS if saved[name].get(field) != current[name].get(field)]
        if changed:
            found.append(f"the {name} split's " + _field_text(changed, saved[name], current[name]))
    return found


def _field_text(changed: list[str], saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """What the changed fields say: a changed shape or dtype with both values (the other fields follow from it),
    else the labels' and the pixels' changes."""
    field = changed[0]
    if field in ("shape", "dtype"):
        show = lambda value: "x".join(map(str, value)) if field == "shape" else value
        return f"{field} differs ({show(saved.get(field))} -> {show(current.get(field))})"
    says = [_SAYS[f] for f in changed if not (f == "labels" and "label_counts" in changed)]
    return ", and its ".join(says)
