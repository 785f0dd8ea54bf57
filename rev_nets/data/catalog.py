"""What each dataset is: its name, where it is published, where its files may lie; the Dataset record and DataError.

Shared by the file-format readers (``idx``, ``cifar``), ``tfds`` and ``sources``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rev_nets.errors import UserError

DATA_DIR_ENV = "REV_NETS_DATA_DIR"
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
SPLITS = ("train", "test")
LABEL_MODES = ("fine", "coarse")


class DataError(UserError):
    """A user-fixable data problem; its message is one sentence naming cause and fix."""


class Dataset(NamedTuple):
    """One split held on the host: uint8 NHWC images, int32 labels, class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


DISPLAY = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}
PUBLISHED_AT = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (mirror https://storage.googleapis.com/cvdf-datasets/mnist/)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-100-python.tar.gz)",
}
SUBDIRS = {
    "mnist": ("mnist", "MNIST", "mnist/raw", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("cifar-10-batches-py",),
    "cifar100": ("cifar-100-python",),
}
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
