"""TFDS, when no data folder is given: a quick reachability probe first, so an offline machine fails in seconds."""

from __future__ import annotations

import importlib
import importlib.util
import socket
import threading

import numpy as np

from rev_nets.data.catalog import DATA_DIR_ENV, PUBLISHED_AT, DataError, Dataset

_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "cifar100": "cifar100"}
_DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "cifar100": ("www.cs.toronto.edu", 443),
}
_REACH_TIMEOUT_S = 3.0


def tensorflow_installed() -> bool:
    """Whether TensorFlow (needed by TFDS to read or build data) is importable."""
    return importlib.util.find_spec("tensorflow") is not None


def host_reachable(host: str, port: int, timeout: float = _REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` s (DNS included, never hangs)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def read(name: str, split: str, label_mode: str) -> Dataset:
    """Load a split through TFDS, downloading only after a quick reachability check."""
    if not tensorflow_installed():
        raise DataError(
            f"Loading {name} without a data folder needs TFDS with TensorFlow, which is not installed; "
            f"run pip install '.[tfds]', or pass data_dir (or set {DATA_DIR_ENV}) to a folder with the "
            "original dataset files."
        )
    tfds = importlib.import_module("tensorflow_datasets")
    builder = tfds.builder(_TFDS_NAMES[name])
    if not builder.is_prepared():
        host, port = _DOWNLOAD_HOSTS[name]
        if not host_reachable(host, port):
            raise DataError(
                f"TFDS cannot download {name}: {host} is unreachable (no network?); pass data_dir "
                f"(or set {DATA_DIR_ENV}) to a folder with the original files from {PUBLISHED_AT[name]}."
            )
        try:
            builder.download_and_prepare()
        except Exception as e:  # noqa: BLE001 -- Network or disk failure inside TFDS: report it in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DataError(
                f"TFDS failed to download {name} ({type(e).__name__}: {first}); pass data_dir "
                f"(or set {DATA_DIR_ENV}) to a folder with the original files from {PUBLISHED_AT[name]}."
            ) from None
    label_key = "coarse_label" if (name == "cifar100" and label_mode == "coarse") else "label"
    # Batches of 10k, not batch_size=-1: TF 2.21 aborts in get_single_element on that path.
    batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)))
    images = np.concatenate([b["image"] for b in batches]).astype(np.uint8, copy=False)
    labels = np.concatenate([b[label_key] for b in batches]).astype(np.int32)
    class_names = tuple(builder.info.features[label_key].names)
    return Dataset(images, labels, class_names)
