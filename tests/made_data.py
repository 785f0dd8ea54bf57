"""Made datasets of the real size, in the original files: for smoke runs of the entry points where no data is.

    python -m tests.made_data --out=/tmp/made                           # /tmp/made/cifar-10-batches-py/
    python -m tests.made_data --out=/tmp/made --dataset=cifar100        # /tmp/made/cifar-100-python/
    python -m tests.made_data --out=/tmp/made --dataset=fashion_mnist   # /tmp/made/fashion_mnist/

CIFAR: 50,000 training and 10,000 test images; MNIST and Fashion-MNIST: 60,000 and 10,000.
Random pixels, balanced labels, the original pickle layout: the loader,
the device split and the train loop see exactly the shapes and sizes of
the real dataset. ``.ci/run`` and ``benchmarks.stress`` use it.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from tests.conftest_data import cifar10_files, cifar100_files, write_folder, write_idx_dataset

CIFAR10_BATCH = 10_000  # Images per original file: 5 training files and one test file.
CIFAR100_TRAIN, CIFAR100_TEST = 50_000, 10_000
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000


def write_cifar10(root: Path, n_per_batch: int = CIFAR10_BATCH, seed: int = 0) -> Path:
    """Writes ``root/cifar-10-batches-py`` with ``n_per_batch`` images per file; returns ``root``."""
    files, _ = cifar10_files(n_per_batch, seed)
    write_folder(root / "cifar-10-batches-py", files)
    return root


def write_cifar100(root: Path, n_train: int = CIFAR100_TRAIN, n_test: int = CIFAR100_TEST, seed: int = 0) -> Path:
    """Writes ``root/cifar-100-python`` (train, test, meta); returns ``root``."""
    files, _ = cifar100_files(n_train, n_test, seed)
    write_folder(root / "cifar-100-python", files)
    return root


def write_idx(root: Path, name: str = "mnist", seed: int = 0) -> Path:
    """Writes ``root/<name>`` with MNIST-sized idx files (``name``: mnist or fashion_mnist); returns ``root``."""
    write_idx_dataset(root / name, gz=True, n_train=MNIST_TRAIN, n_test=MNIST_TEST, seed=seed)
    return root


WRITERS = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "mnist": lambda root: write_idx(root, "mnist"),
    "fashion_mnist": lambda root: write_idx(root, "fashion_mnist"),
}


def main(argv) -> None:
    del argv
    print(f"wrote made {_DATASET.value} into {WRITERS[_DATASET.value](Path(_OUT.value))}")


if __name__ == "__main__":
    _OUT = flags.DEFINE_string("out", None, "Folder to write the dataset's folder into.", required=True)
    _DATASET = flags.DEFINE_enum("dataset", "cifar10", list(WRITERS), "Which dataset's files.")
    app.run(main)
