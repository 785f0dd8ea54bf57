"""MNIST and Fashion-MNIST in their original idx files (``.gz`` or uncompressed), identity-checked.

The two datasets use identical file names, so every idx file set is checked:
a ``.gz`` whose md5 equals the *other* dataset's published md5 is refused,
and images whose pixel mean is clearly the other dataset's are refused.
Files matching neither (e.g. small hand-made test files) are accepted.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from rev_nets.data.catalog import DATA_DIR_ENV, DISPLAY, PUBLISHED_AT, SUBDIRS, DataError, Dataset

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049

# Published md5s of the .gz files (MNIST: yann.lecun.com; Fashion-MNIST: its README).
PUBLISHED_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
# Pixel means on the [0, 1] scale, used when no md5 decides the identity.
_PIXEL_MEAN = {
    "mnist": {"train": 0.1307, "test": 0.1325},
    "fashion_mnist": {"train": 0.2860, "test": 0.2868},
}
_OTHER_IDX = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


def read(name: str, split: str, root: Path) -> Dataset:
    """Find, identity-check, read and cross-validate one split's idx image and label files."""
    images_path, labels_path = _find_idx_files(name, split, root)
    digests = {p: _md5(p) for p in (images_path, labels_path) if p.suffix == ".gz"}
    _check_md5_identity(name, digests)
    images = _read_idx_images(name, images_path)
    labels = _read_idx_labels(name, labels_path)
    if len(labels) != len(images):
        raise DataError(
            f"{DISPLAY[name]} files {images_path} and {labels_path} disagree: {len(images)} images but "
            f"{len(labels)} labels; re-download both from {PUBLISHED_AT[name]}."
        )
    own_md5 = PUBLISHED_MD5[name].get(images_path.name)
    if own_md5 is None or digests.get(images_path) != own_md5:  # identity not settled by md5
        _check_pixel_identity(name, split, images_path, images)
    return Dataset(images[..., None], labels, CLASS_NAMES[name])


def _find_idx_files(name: str, split: str, root: Path) -> tuple[Path, Path]:
    """Return the (images, labels) paths from the first candidate folder holding both."""
    stems = _IDX_FILES[split]
    folders = [root / sub for sub in SUBDIRS[name]] + [root]
    for folder in folders:
        found = [_idx_file_in(folder, stem) for stem in stems]
        if all(found):
            return found[0], found[1]
    expected = " and ".join(f"{s}(.gz)" for s in stems)
    raise DataError(
        f"No {DISPLAY[name]} {split} files found: expected {expected} in one of "
        f"{', '.join(str(f) for f in folders)}; download them from {PUBLISHED_AT[name]} "
        f"or pass data_dir (or set {DATA_DIR_ENV}) to the folder that holds them."
    )


def _idx_file_in(folder: Path, stem: str) -> Path | None:
    """The .gz or uncompressed form of an idx file in ``folder`` (gz preferred), or None."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _md5(path: Path) -> str:
    """md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5_identity(name: str, digests: dict[Path, str]) -> None:
    """Refuse .gz files whose md5 is the other dataset's published md5 (same file names)."""
    other = _OTHER_IDX[name]
    for path, digest in digests.items():
        if digest == PUBLISHED_MD5[other].get(path.name):
            raise DataError(
                f"File {path} is the published {DISPLAY[other]} file (its md5 matches), not {DISPLAY[name]}; "
                f"put the {DISPLAY[name]} files in {SUBDIRS[name][0]}/ under the data folder, "
                f"or load {other!r} instead."
            )


def _check_pixel_identity(name: str, split: str, path: Path, images: np.ndarray) -> None:
    """Refuse images whose pixel mean is clearly the other dataset's, not this one's."""
    if images.size == 0:
        return
    other = _OTHER_IDX[name]
    mean = float(images.mean(dtype=np.float64)) / 255.0
    own_mean, other_mean = _PIXEL_MEAN[name][split], _PIXEL_MEAN[other][split]
    if abs(mean - other_mean) < 0.01 and abs(mean - own_mean) > 0.05:
        raise DataError(
            f"File {path} looks like {DISPLAY[other]}, not {DISPLAY[name]}: its pixel mean is {mean:.4f} "
            f"({DISPLAY[other]} {other_mean:.4f}, {DISPLAY[name]} {own_mean:.4f}); put the {DISPLAY[name]} "
            f"files in {SUBDIRS[name][0]}/ under the data folder, or load {other!r} instead."
        )


def _read_maybe_gzip(name: str, path: Path) -> bytes:
    """Raw bytes of a file, gunzipped when it is gzip (by magic bytes or .gz suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{DISPLAY[name]} file {path} cannot be read ({e.strerror}); check its permissions.") from None
    is_gzip = raw[:2] == b"\x1f\x8b"
    if path.suffix == ".gz" and not is_gzip:
        raise DataError(
            f"{DISPLAY[name]} file {path} is not a gzip file despite its .gz name; "
            f"re-download it from {PUBLISHED_AT[name]} or remove it."
        )
    if not is_gzip:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{DISPLAY[name]} file {path} is a truncated or corrupt gzip file ({e}); "
            f"re-download it from {PUBLISHED_AT[name]} or remove it."
        ) from None


def _parse_idx(name: str, path: Path, magic: int, what: str) -> tuple[tuple[int, ...], np.ndarray]:
    """Parse an unsigned-byte idx file: check magic and size against the header; return (dims, flat data)."""
    raw = _read_maybe_gzip(name, path)
    fix = f"re-download it from {PUBLISHED_AT[name]} or remove it"
    if len(raw) < 4:
        raise DataError(f"{DISPLAY[name]} file {path} is truncated: it holds only {len(raw)} bytes; {fix}.")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"{DISPLAY[name]} file {path} has the wrong magic number {found} (expected {magic} for an idx "
            f"{what} file); {fix}."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{DISPLAY[name]} file {path} is truncated inside its header; {fix}.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    have = len(raw) - header
    if have != expected:
        kind = "truncated" if have < expected else "the wrong size"
        raise DataError(
            f"{DISPLAY[name]} file {path} is {kind}: its header says {' x '.join(map(str, dims))} {what} "
            f"({expected} bytes) but it holds {have} bytes of data; {fix}."
        )
    return dims, np.frombuffer(raw, dtype=np.uint8, offset=header)


def _read_idx_images(name: str, path: Path) -> np.ndarray:
    """uint8 (N, 28, 28) images from an idx3 file."""
    dims, flat = _parse_idx(name, path, _IDX_IMAGES_MAGIC, "images")
    if dims[1:] != (28, 28):
        raise DataError(
            f"{DISPLAY[name]} file {path} holds {dims[1]}x{dims[2]} images, not 28x28; "
            f"re-download it from {PUBLISHED_AT[name]} or remove it."
        )
    return flat.reshape(dims).copy()


def _read_idx_labels(name: str, path: Path) -> np.ndarray:
    """int32 (N,) labels in 0..9 from an idx1 file."""
    _, flat = _parse_idx(name, path, _IDX_LABELS_MAGIC, "labels")
    if flat.size and int(flat.max()) > 9:
        raise DataError(
            f"{DISPLAY[name]} file {path} has label {int(flat.max())} out of range 0..9; "
            f"re-download it from {PUBLISHED_AT[name]} or remove it."
        )
    return flat.astype(np.int32)
