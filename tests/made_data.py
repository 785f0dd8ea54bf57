"""Made CIFAR-10 of the real size, in the original files: for smoke runs of the entry points where no data is.

    python -m tests.made_data --out=/tmp/made    # writes /tmp/made/cifar-10-batches-py/ (50,000 + 10,000 images)

Random pixels, balanced labels, the original pickle layout: the loader,
the device split and the train loop see exactly the shapes and sizes of
the real dataset. ``.ci/run`` and ``benchmarks.stress`` use it.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from tests.conftest_data import cifar10_files, write_folder

CIFAR10_BATCH = 10_000  # Images per original file: 5 training files and one test file.


def write_cifar10(root: Path, n_per_batch: int = CIFAR10_BATCH, seed: int = 0) -> Path:
    """Writes ``root/cifar-10-batches-py`` with ``n_per_batch`` images per file; returns ``root``."""
    files, _ = cifar10_files(n_per_batch, seed)
    write_folder(root / "cifar-10-batches-py", files)
    return root


def main(argv) -> None:
    del argv
    root = write_cifar10(Path(_OUT.value))
    print(f"wrote made CIFAR-10 ({5 * CIFAR10_BATCH:,} + {CIFAR10_BATCH:,} images) to {root}/cifar-10-batches-py")


if __name__ == "__main__":
    _OUT = flags.DEFINE_string("out", None, "Folder to write cifar-10-batches-py/ into.", required=True)
    app.run(main)
