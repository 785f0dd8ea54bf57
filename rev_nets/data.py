"""Image classification data: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

``load(name, split, data_dir)`` returns uint8 NHWC images, int32 labels and the
class names.  Sources, in order:

1. An explicit folder: the ``--data_dir`` flag, else the environment variable
   ``REV_NETS_DATA_DIR``.  Files are read with plain numpy/gzip/pickle/tarfile
   from the datasets' original distribution formats.
2. Otherwise TFDS with its normal download (needs the ``tfds`` extra, i.e.
   TensorFlow: ``pip install '.[tfds]'``).

Accepted layouts inside the folder (first match wins; one folder may hold
several datasets side by side, e.g. ``--data_dir=../shared/datasets``):

=============  ==============================================================
dataset        where the files may be
=============  ==============================================================
mnist          ``mnist/``, ``MNIST/``, ``mnist/raw/``, ``MNIST/raw/``, or the
               folder itself
fashion_mnist  ``fashion_mnist/``, ``fashion-mnist/``, ``FashionMNIST/``,
               ``FashionMNIST/raw/``, or the folder itself
cifar10        ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
               ``batches.meta``), ``cifar-10-python.tar.gz``, or those files in
               the folder itself
cifar100       ``cifar-100-python/`` (``train``, ``test``, ``meta``),
               ``cifar-100-python.tar.gz``, or those files in the folder itself
=============  ==============================================================

MNIST and Fashion-MNIST are the four idx files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``), each either ``.gz`` or uncompressed.  Because the
two datasets use identical file names, every idx file set is checked: a
``.gz`` whose md5 equals the *other* dataset's published md5 is refused, and
images whose pixel mean is clearly the other dataset's are refused.  Files
matching neither (e.g. small hand-made test files) are accepted.  CIFAR md5s
are not checked (valid re-packings differ from the published archive); their
content is validated instead.

Every user-fixable problem raises :class:`DataError` whose message is one
sentence naming the cause and the fix.

The second half of the module is the on-device input pipeline used for
training: per-channel statistics from the training split, standardisation,
a deterministic validation split carved from train, device-resident arrays and
per-epoch shuffled batch indices drawn from an explicit PRNG key.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import io
import os
import pickle
import socket
import tarfile
import threading
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DATA_DIR_ENV = "REV_NETS_DATA_DIR"
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
SPLITS = ("train", "test")
LABEL_MODES = ("fine", "coarse")


class DataError(Exception):
    """A user-fixable data problem; its message is one sentence naming cause and fix."""


class Dataset(NamedTuple):
    """One split held on the host: uint8 NHWC images, int32 labels, class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


# ---------------------------------------------------------------------------
# Dataset facts.

_DISPLAY = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}
_PUBLISHED_AT = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (mirror https://storage.googleapis.com/cvdf-datasets/mnist/)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-100-python.tar.gz)",
}
_SUBDIRS = {
    "mnist": ("mnist", "MNIST", "mnist/raw", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("cifar-10-batches-py",),
    "cifar100": ("cifar-100-python",),
}
_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049

# Published md5s of the .gz files (MNIST: yann.lecun.com; Fashion-MNIST: its README).
_PUBLISHED_MD5 = {
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

_IDX_CLASS_NAMES = {
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

_CIFAR_FILES = {
    ("cifar10", "train"): tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("cifar10", "test"): ("test_batch",),
    ("cifar100", "train"): ("train",),
    ("cifar100", "test"): ("test",),
}
_CIFAR_META = {"cifar10": "batches.meta", "cifar100": "meta"}
# (labels key in a batch, label-names key in meta, number of classes)
_CIFAR_LABELS = {
    ("cifar10", "fine"): ("labels", "label_names", 10),
    ("cifar10", "coarse"): ("labels", "label_names", 10),
    ("cifar100", "fine"): ("fine_labels", "fine_label_names", 100),
    ("cifar100", "coarse"): ("coarse_labels", "coarse_label_names", 20),
}

_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "cifar100": "cifar100"}
_DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "cifar100": ("www.cs.toronto.edu", 443),
}
_REACH_TIMEOUT_S = 3.0


# ---------------------------------------------------------------------------
# Public loading API.


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
        return _load_tfds(name, split, label_mode)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(
            f"Data folder {root} does not exist or is not a folder; pass --data_dir "
            f"(or set {DATA_DIR_ENV}) to a folder holding the {_DISPLAY[name]} files."
        )
    if name in _IDX_CLASS_NAMES:
        return _load_idx_dataset(name, split, root)
    return _load_cifar(name, split, root, label_mode)


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


# ---------------------------------------------------------------------------
# MNIST and Fashion-MNIST: idx files.


def _load_idx_dataset(name: str, split: str, root: Path) -> Dataset:
    """Find, identity-check, read and cross-validate one split's idx image and label files."""
    images_path, labels_path = _find_idx_files(name, split, root)
    digests = {p: _md5(p) for p in (images_path, labels_path) if p.suffix == ".gz"}
    _check_md5_identity(name, digests)
    images = _read_idx_images(name, images_path)
    labels = _read_idx_labels(name, labels_path)
    if len(labels) != len(images):
        raise DataError(
            f"{_DISPLAY[name]} files {images_path} and {labels_path} disagree: {len(images)} images but "
            f"{len(labels)} labels; re-download both from {_PUBLISHED_AT[name]}."
        )
    own_md5 = _PUBLISHED_MD5[name].get(images_path.name)
    if own_md5 is None or digests.get(images_path) != own_md5:  # identity not settled by md5
        _check_pixel_identity(name, split, images_path, images)
    return Dataset(images[..., None], labels, _IDX_CLASS_NAMES[name])


def _find_idx_files(name: str, split: str, root: Path) -> tuple[Path, Path]:
    """Return the (images, labels) paths from the first candidate folder holding both."""
    stems = _IDX_FILES[split]
    folders = [root / sub for sub in _SUBDIRS[name]] + [root]
    for folder in folders:
        found = [_idx_file_in(folder, stem) for stem in stems]
        if all(found):
            return found[0], found[1]
    expected = " and ".join(f"{s}(.gz)" for s in stems)
    raise DataError(
        f"No {_DISPLAY[name]} {split} files found: expected {expected} in one of "
        f"{', '.join(str(f) for f in folders)}; download them from {_PUBLISHED_AT[name]} "
        f"or pass --data_dir (or set {DATA_DIR_ENV}) to the folder that holds them."
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
        if digest == _PUBLISHED_MD5[other].get(path.name):
            raise DataError(
                f"File {path} is the published {_DISPLAY[other]} file (its md5 matches), not {_DISPLAY[name]}; "
                f"put the {_DISPLAY[name]} files in {_SUBDIRS[name][0]}/ under the data folder, "
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
            f"File {path} looks like {_DISPLAY[other]}, not {_DISPLAY[name]}: its pixel mean is {mean:.4f} "
            f"({_DISPLAY[other]} {other_mean:.4f}, {_DISPLAY[name]} {own_mean:.4f}); put the {_DISPLAY[name]} "
            f"files in {_SUBDIRS[name][0]}/ under the data folder, or load {other!r} instead."
        )


def _read_maybe_gzip(name: str, path: Path) -> bytes:
    """Raw bytes of a file, gunzipped when it is gzip (by magic bytes or .gz suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{_DISPLAY[name]} file {path} cannot be read ({e.strerror}); check its permissions.") from None
    is_gzip = raw[:2] == b"\x1f\x8b"
    if path.suffix == ".gz" and not is_gzip:
        raise DataError(
            f"{_DISPLAY[name]} file {path} is not a gzip file despite its .gz name; "
            f"re-download it from {_PUBLISHED_AT[name]} or remove it."
        )
    if not is_gzip:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{_DISPLAY[name]} file {path} is a truncated or corrupt gzip file ({e}); "
            f"re-download it from {_PUBLISHED_AT[name]} or remove it."
        ) from None


def _parse_idx(name: str, path: Path, magic: int, what: str) -> tuple[tuple[int, ...], np.ndarray]:
    """Parse an unsigned-byte idx file: check magic and size against the header; return (dims, flat data)."""
    raw = _read_maybe_gzip(name, path)
    fix = f"re-download it from {_PUBLISHED_AT[name]} or remove it"
    if len(raw) < 4:
        raise DataError(f"{_DISPLAY[name]} file {path} is truncated: it holds only {len(raw)} bytes; {fix}.")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"{_DISPLAY[name]} file {path} has the wrong magic number {found} (expected {magic} for an idx "
            f"{what} file); {fix}."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{_DISPLAY[name]} file {path} is truncated inside its header; {fix}.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    have = len(raw) - header
    if have != expected:
        kind = "truncated" if have < expected else "the wrong size"
        raise DataError(
            f"{_DISPLAY[name]} file {path} is {kind}: its header says {' x '.join(map(str, dims))} {what} "
            f"({expected} bytes) but it holds {have} bytes of data; {fix}."
        )
    return dims, np.frombuffer(raw, dtype=np.uint8, offset=header)


def _read_idx_images(name: str, path: Path) -> np.ndarray:
    """uint8 (N, 28, 28) images from an idx3 file."""
    dims, flat = _parse_idx(name, path, _IDX_IMAGES_MAGIC, "images")
    if dims[1:] != (28, 28):
        raise DataError(
            f"{_DISPLAY[name]} file {path} holds {dims[1]}x{dims[2]} images, not 28x28; "
            f"re-download it from {_PUBLISHED_AT[name]} or remove it."
        )
    return flat.reshape(dims).copy()


def _read_idx_labels(name: str, path: Path) -> np.ndarray:
    """int32 (N,) labels in 0..9 from an idx1 file."""
    _, flat = _parse_idx(name, path, _IDX_LABELS_MAGIC, "labels")
    if flat.size and int(flat.max()) > 9:
        raise DataError(
            f"{_DISPLAY[name]} file {path} has label {int(flat.max())} out of range 0..9; "
            f"re-download it from {_PUBLISHED_AT[name]} or remove it."
        )
    return flat.astype(np.int32)


# ---------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100: python pickles, in a folder or the .tar.gz archive.


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: CIFAR pickles need nothing else."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        return super().find_class(module, name)


def _load_cifar(name: str, split: str, root: Path, label_mode: str) -> Dataset:
    """Read one CIFAR split (images, labels for ``label_mode``, class names) from folder or archive."""
    wanted = _CIFAR_FILES[(name, split)] + (_CIFAR_META[name],)
    blobs = _read_cifar_files(name, root, wanted)
    labels_key, names_key, num_classes = _CIFAR_LABELS[(name, label_mode)]
    class_names = _cifar_class_names(name, blobs[_CIFAR_META[name]], names_key, num_classes)
    parts = [_cifar_batch(name, blobs[f], labels_key, num_classes) for f in _CIFAR_FILES[(name, split)]]
    flat = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    images = np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return Dataset(images, labels, class_names)


def _read_cifar_files(name: str, root: Path, wanted: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """Unpickle the wanted files from the sub-folder, the archive, or the folder itself.

    Returns {file name: (where it came from, unpickled object)}.
    """
    sub = root / _SUBDIRS[name][0]
    archive = root / _ARCHIVES[name]
    if all((sub / f).is_file() for f in wanted):
        return _read_cifar_folder(name, sub, wanted)
    if archive.is_file():
        return _read_cifar_archive(name, archive, wanted)
    if all((root / f).is_file() for f in wanted):
        return _read_cifar_folder(name, root, wanted)
    if sub.is_dir():  # an incomplete unpacked folder: name what it lacks
        return _read_cifar_folder(name, sub, wanted)
    raise DataError(
        f"No {_DISPLAY[name]} files found: expected the folder {sub} (with {', '.join(wanted)}) or the archive "
        f"{archive}; download cifar-{name[5:]}-python.tar.gz from {_PUBLISHED_AT[name].split(' ')[0]} "
        f"or pass --data_dir (or set {DATA_DIR_ENV}) to the folder that holds it."
    )


def _read_cifar_folder(name: str, folder: Path, wanted: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """Unpickle each wanted file from a folder, naming any that is missing."""
    missing = [f for f in wanted if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{_DISPLAY[name]} folder {folder} lacks {', '.join(missing)}; re-download "
            f"{_ARCHIVES[name]} from {_PUBLISHED_AT[name].split(' ')[0]} and unpack it there."
        )
    return {f: (str(folder / f), _unpickle(name, str(folder / f), (folder / f).read_bytes())) for f in wanted}


def _read_cifar_archive(name: str, archive: Path, wanted: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """Unpickle each wanted member (``<sub-folder>/<file>``) of the .tar.gz in one sequential pass."""
    top = _SUBDIRS[name][0]
    members = {f"{top}/{f}": f for f in wanted}
    found: dict[str, tuple[str, object]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                key = members.get(member.name.lstrip("./"))
                if key is None or not member.isfile():
                    continue
                where = f"{archive}:{member.name}"
                found[key] = (where, _unpickle(name, where, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{_DISPLAY[name]} archive {archive} is truncated or corrupt ({e}); re-download it from "
            f"{_PUBLISHED_AT[name].split(' ')[0]} or remove it."
        ) from None
    missing = [m for m, f in members.items() if f not in found]
    if missing:
        raise DataError(
            f"{_DISPLAY[name]} archive {archive} lacks {', '.join(missing)}; re-download it from "
            f"{_PUBLISHED_AT[name].split(' ')[0]}."
        )
    return found


def _unpickle(name: str, where: str, blob: bytes) -> object:
    """Unpickle a CIFAR file (Python 2 pickles: bytes keys), only allowing numpy arrays inside."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 -- Any failure of an untrusted pickle is a bad file
        raise DataError(
            f"{_DISPLAY[name]} file {where} is not a valid CIFAR pickle ({type(e).__name__}: {e}); "
            f"re-download it from {_PUBLISHED_AT[name].split(' ')[0]}."
        ) from None


def _str_keys(where: str, name: str, obj: object) -> dict:
    """A CIFAR pickle's dict with bytes keys decoded to str (Python 2 pickles give bytes keys)."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{_DISPLAY[name]} file {where} holds a {type(obj).__name__}, not the expected dict; "
            f"re-download it from {_PUBLISHED_AT[name].split(' ')[0]}."
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_class_names(name: str, blob: tuple[str, object], key: str, num_classes: int) -> tuple[str, ...]:
    """Class names from the meta pickle, checked to number ``num_classes``."""
    where, obj = blob
    meta = _str_keys(where, name, obj)
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        raise DataError(
            f"{_DISPLAY[name]} file {where} lacks a {key!r} list of {num_classes} class names; "
            f"re-download it from {_PUBLISHED_AT[name].split(' ')[0]}."
        )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _cifar_batch(
    name: str, blob: tuple[str, object], labels_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (uint8 (n, 3072) pixel rows, int32 (n,) labels) from one CIFAR batch pickle."""
    where, obj = blob
    batch = _str_keys(where, name, obj)
    fix = f"re-download it from {_PUBLISHED_AT[name].split(' ')[0]}"
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{_DISPLAY[name]} file {where} has 'data' of {got}, expected uint8 (N, 3072); {fix}.")
    if labels_key not in batch:
        raise DataError(f"{_DISPLAY[name]} file {where} has no {labels_key!r} entry; {fix}.")
    try:
        labels = np.asarray(batch[labels_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{_DISPLAY[name]} file {where} has non-integer {labels_key!r}; {fix}.") from None
    if labels.shape != (len(data),):
        raise DataError(f"{_DISPLAY[name]} file {where} has {labels.size} {labels_key} for {len(data)} images; {fix}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(
            f"{_DISPLAY[name]} file {where} has label {bad} in {labels_key!r}, out of range 0..{num_classes - 1}; {fix}."
        )
    return data, labels.astype(np.int32)


# ---------------------------------------------------------------------------
# TFDS (no local folder).


def _tensorflow_installed() -> bool:
    """Whether TensorFlow (needed by TFDS to read or build data) is importable."""
    return importlib.util.find_spec("tensorflow") is not None


def _host_reachable(host: str, port: int, timeout: float = _REACH_TIMEOUT_S) -> bool:
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


def _load_tfds(name: str, split: str, label_mode: str) -> Dataset:
    """Load a split through TFDS, downloading only after a quick reachability check."""
    if not _tensorflow_installed():
        raise DataError(
            f"Loading {name} without a data folder needs TFDS with TensorFlow, which is not installed; "
            f"run pip install '.[tfds]', or pass --data_dir (or set {DATA_DIR_ENV}) to a folder with the "
            "original dataset files."
        )
    tfds = importlib.import_module("tensorflow_datasets")
    builder = tfds.builder(_TFDS_NAMES[name])
    if not builder.is_prepared():
        host, port = _DOWNLOAD_HOSTS[name]
        if not _host_reachable(host, port):
            raise DataError(
                f"TFDS cannot download {name}: {host} is unreachable (no network?); pass --data_dir "
                f"(or set {DATA_DIR_ENV}) to a folder with the original files from {_PUBLISHED_AT[name]}."
            )
        try:
            builder.download_and_prepare()
        except Exception as e:  # noqa: BLE001 -- Network or disk failure inside TFDS: report it in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DataError(
                f"TFDS failed to download {name} ({type(e).__name__}: {first}); pass --data_dir "
                f"(or set {DATA_DIR_ENV}) to a folder with the original files from {_PUBLISHED_AT[name]}."
            ) from None
    label_key = "coarse_label" if (name == "cifar100" and label_mode == "coarse") else "label"
    # Batches of 10k, not batch_size=-1: TF 2.21 aborts in get_single_element on that path.
    batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)))
    images = np.concatenate([b["image"] for b in batches]).astype(np.uint8, copy=False)
    labels = np.concatenate([b[label_key] for b in batches]).astype(np.int32)
    class_names = tuple(builder.info.features[label_key].names)
    return Dataset(images, labels, class_names)


# ---------------------------------------------------------------------------
# On-device input pipeline.


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
        raise ValueError(f"channel_stats wants non-empty uint8 NHWC images, got {images.dtype} {images.shape}")
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


def batch_at(split: DeviceSplit, indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gather one batch of (images, labels) on device for a row of ``epoch_batches``."""
    return jnp.take(split.images, indices, axis=0), jnp.take(split.labels, indices, axis=0)
