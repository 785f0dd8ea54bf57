"""Writers for tiny datasets in the exact original distribution formats.

Used by tests/test_data.py and by any test that needs a small ``--data_dir``:
``make_data_dir(tmp_path)`` gives a folder that every loader in
``rev_nets.data`` accepts, holding MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = [f"fine_{i}" for i in range(100)]
CIFAR100_COARSE = [f"coarse_{i}" for i in range(20)]


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte idx file: magic 0x0000 08 <ndim>, big-endian int32 dims, then the data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_bytes(path: Path, payload: bytes, gz: bool) -> Path:
    """Write ``payload`` to ``path`` (adding .gz and compressing when ``gz``); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def random_idx_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 (n, 28, 28) images (pixel mean ~0.5: neither MNIST nor Fashion-MNIST) and labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


def write_idx_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> tuple[Path, Path]:
    """Write one split's images and labels idx files into ``folder``."""
    image_name, label_name = IDX_NAMES[split]
    return (
        write_bytes(folder / image_name, idx_bytes(images), gz),
        write_bytes(folder / label_name, idx_bytes(labels), gz),
    )


def write_idx_dataset(folder: Path, gz: bool = True, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict:
    """Write train and test idx files into ``folder``; return {split: (images, labels)}."""
    out = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = random_idx_split(n, s)
        write_idx_split(folder, split, images, labels, gz)
        out[split] = (images, labels)
    return out


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """Random uint8 (n, 3072) rows: R, G, B planes of 32x32, row-major, as in the CIFAR pickles."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def to_nhwc(rows: np.ndarray) -> np.ndarray:
    """What a loader must return for CIFAR rows: (n, 32, 32, 3)."""
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def pickled(obj: dict) -> bytes:
    """A protocol-2 pickle with bytes keys, as the original Python 2 CIFAR files load."""
    return pickle.dumps(obj, protocol=2)


def cifar10_files(n_per_batch: int = 10, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """The seven CIFAR-10 files as bytes, and {split: (rows, labels)}."""
    files, rows_all, labels_all = {}, [], []
    for i in range(1, 7):
        rows = cifar_rows(n_per_batch, seed + i)
        labels = [int(v) for v in (np.arange(n_per_batch) + i) % 10]
        name = f"data_batch_{i}" if i <= 5 else "test_batch"
        files[name] = pickled(
            {
                b"batch_label": f"batch {i}".encode(),
                b"labels": labels,
                b"data": rows,
                b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n_per_batch)],
            }
        )
        rows_all.append(rows)
        labels_all.append(np.asarray(labels))
    files["batches.meta"] = pickled(
        {
            b"num_cases_per_batch": n_per_batch,
            b"label_names": [n.encode() for n in CIFAR10_NAMES],
            b"num_vis": 3072,
        }
    )
    arrays = {
        "train": (np.concatenate(rows_all[:5]), np.concatenate(labels_all[:5])),
        "test": (rows_all[5], labels_all[5]),
    }
    return files, arrays


def cifar100_files(n_train: int = 40, n_test: int = 20, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """The three CIFAR-100 files as bytes, and {split: (rows, fine labels, coarse labels)}."""
    files, arrays = {}, {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        rng = np.random.default_rng(s + 100)
        rows = cifar_rows(n, s)
        fine = rng.integers(0, 100, size=n)
        coarse = fine // 5
        files[split] = pickled(
            {
                b"filenames": [f"{split}_{j}.png".encode() for j in range(n)],
                b"batch_label": f"{split} batch".encode(),
                b"fine_labels": [int(v) for v in fine],
                b"coarse_labels": [int(v) for v in coarse],
                b"data": rows,
            }
        )
        arrays[split] = (rows, fine, coarse)
    files["meta"] = pickled(
        {
            b"fine_label_names": [n.encode() for n in CIFAR100_FINE],
            b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE],
        }
    )
    return files, arrays


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder


def write_archive(path: Path, top: str, files: dict[str, bytes]) -> Path:
    """Write a .tar.gz holding ``top/<name>`` for each file, like the published archives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def make_data_dir(root: Path) -> dict:
    """A folder with all four datasets in their usual sub-folders; returns the arrays written."""
    c10_files, c10 = cifar10_files()
    c100_files, c100 = cifar100_files()
    out = {
        "mnist": write_idx_dataset(root / "mnist", gz=True, seed=0),
        "fashion_mnist": write_idx_dataset(root / "fashion-mnist", gz=False, seed=10),
        "cifar10": c10,
        "cifar100": c100,
    }
    write_folder(root / "cifar-10-batches-py", c10_files)
    write_archive(root / "cifar-100-python.tar.gz", "cifar-100-python", c100_files)
    return out
