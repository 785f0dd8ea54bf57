"""CIFAR-10 and CIFAR-100 in their original python pickles, in a folder or the ``.tar.gz`` archive.

Only numpy arrays may come out of a pickle. CIFAR md5s are not checked
(valid re-packings differ from the published archive); the content is
validated instead.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from rev_nets.data.catalog import ARCHIVES, DATA_DIR_ENV, DISPLAY, PUBLISHED_AT, SUBDIRS, DataError, Dataset

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


def read(name: str, split: str, root: Path, label_mode: str) -> Dataset:
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
    sub = root / SUBDIRS[name][0]
    archive = root / ARCHIVES[name]
    if all((sub / f).is_file() for f in wanted):
        return _read_cifar_folder(name, sub, wanted)
    if archive.is_file():
        return _read_cifar_archive(name, archive, wanted)
    if all((root / f).is_file() for f in wanted):
        return _read_cifar_folder(name, root, wanted)
    if sub.is_dir():  # an incomplete unpacked folder: name what it lacks
        return _read_cifar_folder(name, sub, wanted)
    raise DataError(
        f"No {DISPLAY[name]} files found: expected the folder {sub} (with {', '.join(wanted)}) or the archive "
        f"{archive}; download cifar-{name[5:]}-python.tar.gz from {PUBLISHED_AT[name].split(' ')[0]} "
        f"or pass data_dir (or set {DATA_DIR_ENV}) to the folder that holds it."
    )


def _read_cifar_folder(name: str, folder: Path, wanted: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """Unpickle each wanted file from a folder, naming any that is missing."""
    missing = [f for f in wanted if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{DISPLAY[name]} folder {folder} lacks {', '.join(missing)}; re-download "
            f"{ARCHIVES[name]} from {PUBLISHED_AT[name].split(' ')[0]} and unpack it there."
        )
    return {f: (str(folder / f), _unpickle(name, str(folder / f), (folder / f).read_bytes())) for f in wanted}


def _read_cifar_archive(name: str, archive: Path, wanted: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """Unpickle each wanted member (``<sub-folder>/<file>``) of the .tar.gz in one sequential pass."""
    top = SUBDIRS[name][0]
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
            f"{DISPLAY[name]} archive {archive} is truncated or corrupt ({e}); re-download it from "
            f"{PUBLISHED_AT[name].split(' ')[0]} or remove it."
        ) from None
    missing = [m for m, f in members.items() if f not in found]
    if missing:
        raise DataError(
            f"{DISPLAY[name]} archive {archive} lacks {', '.join(missing)}; re-download it from "
            f"{PUBLISHED_AT[name].split(' ')[0]}."
        )
    return found


def _unpickle(name: str, where: str, blob: bytes) -> object:
    """Unpickle a CIFAR file (Python 2 pickles: bytes keys), only allowing numpy arrays inside."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 -- Any failure of an untrusted pickle is a bad file
        raise DataError(
            f"{DISPLAY[name]} file {where} is not a valid CIFAR pickle ({type(e).__name__}: {e}); "
            f"re-download it from {PUBLISHED_AT[name].split(' ')[0]}."
        ) from None


def _str_keys(where: str, name: str, obj: object) -> dict:
    """A CIFAR pickle's dict with bytes keys decoded to str (Python 2 pickles give bytes keys)."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{DISPLAY[name]} file {where} holds a {type(obj).__name__}, not the expected dict; "
            f"re-download it from {PUBLISHED_AT[name].split(' ')[0]}."
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_class_names(name: str, blob: tuple[str, object], key: str, num_classes: int) -> tuple[str, ...]:
    """Class names from the meta pickle, checked to number ``num_classes``."""
    where, obj = blob
    meta = _str_keys(where, name, obj)
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        raise DataError(
            f"{DISPLAY[name]} file {where} lacks a {key!r} list of {num_classes} class names; "
            f"re-download it from {PUBLISHED_AT[name].split(' ')[0]}."
        )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _cifar_batch(
    name: str, blob: tuple[str, object], labels_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (uint8 (n, 3072) pixel rows, int32 (n,) labels) from one CIFAR batch pickle."""
    where, obj = blob
    batch = _str_keys(where, name, obj)
    fix = f"re-download it from {PUBLISHED_AT[name].split(' ')[0]}"
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{DISPLAY[name]} file {where} has 'data' of {got}, expected uint8 (N, 3072); {fix}.")
    if labels_key not in batch:
        raise DataError(f"{DISPLAY[name]} file {where} has no {labels_key!r} entry; {fix}.")
    try:
        labels = np.asarray(batch[labels_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{DISPLAY[name]} file {where} has non-integer {labels_key!r}; {fix}.") from None
    if labels.shape != (len(data),):
        raise DataError(f"{DISPLAY[name]} file {where} has {labels.size} {labels_key} for {len(data)} images; {fix}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(
            f"{DISPLAY[name]} file {where} has label {bad} in {labels_key!r}, out of range 0..{num_classes - 1}; {fix}."
        )
    return data, labels.astype(np.int32)
