"""Where a split comes from: the data folder (flag, then environment variable) in the original formats, else TFDS."""

from __future__ import annotations

import os
from pathlib import Path

from rev_nets.data import cifar, idx, tfds
from rev_nets.data.catalog import DATA_DIR_ENV, DATASETS, DISPLAY, LABEL_MODES, SPLITS, DataError, Dataset


def resolve_data_dir(data_dir: str | None) -> str | None:
    """The data folder to use: the flag if given, else $REV_NETS_DATA_DIR, else None (TFDS)."""
    if data_dir:
        return str(data_dir)
    return os.environ.get(DATA_DIR_ENV) or None


def load(name: str, split: str, data_dir: str | None = None, *, label_mode: str = "fine") -> Dataset:
    """Load one split of a dataset from a local folder (flag, env var) or, failing both, TFDS.

    ``label_mode`` only matters for cifar100 ("fine": 100 classes, "coarse": 20).
    """
    _check_args(name, split, label_mode)
    folder = resolve_data_dir(data_dir)
    if folder is None:
        return tfds.read(name, split, label_mode)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(
            f"Data folder {root} does not exist or is not a folder; pass data_dir "
            f"(or set {DATA_DIR_ENV}) to a folder holding the {DISPLAY[name]} files."
        )
    if name in idx.CLASS_NAMES:
        return idx.read(name, split, root)
    return cifar.read(name, split, root, label_mode)


def _check_args(name: str, split: str, label_mode: str) -> None:
    """Refuse unknown dataset names, splits and label modes with one sentence."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; use one of {', '.join(DATASETS)}.")
    if split not in SPLITS:
        raise DataError(
            f"Unknown split {split!r} for {name}; use 'train' or 'test' "
            "(carve a validation set from train with split_validation)."
        )
    if label_mode not in LABEL_MODES:
        raise DataError(f"Unknown label_mode {label_mode!r}; use 'fine' or 'coarse' (coarse only changes cifar100).")
