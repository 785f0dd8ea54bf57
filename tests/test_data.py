"""Dataset readers, their error sentences, the TFDS path and the on-device pipeline.

Readers run against tiny files written in the exact original formats; the real
MNIST and CIFAR-10 files in ../shared/datasets are checked when present.
"""

import collections
import gzip
import hashlib
import importlib.util
import os
import pickle
import socket
import threading
from pathlib import Path

import conftest_data as cd
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rev_nets import data
from rev_nets.data import DATA_DIR_ENV, DataError, Dataset, DeviceSplit, catalog, fingerprints, idx
from rev_nets.data import tfds as data_tfds

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(
    not (SHARED / "mnist").is_dir() or not (SHARED / "cifar-10-batches-py").is_dir(),
    reason=f"real datasets not present at {SHARED} (only on the project's build machines)",
)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    """Tests start without $REV_NETS_DATA_DIR so an outer setting cannot leak in."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def one_sentence(message: str) -> bool:
    """A single line ending in one full stop (no trace, no second sentence start)."""
    return "\n" not in message and message.endswith(".") and ". " not in message.replace("e.g. ", "")


# ---------------------------------------------------------------------------
# MNIST / Fashion-MNIST idx readers.

IDX_LAYOUTS = [("mnist", sub) for sub in ("mnist", "MNIST", "mnist/raw", "MNIST/raw", ".")] + [
    ("fashion_mnist", sub) for sub in ("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw", ".")
]


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("name,sub", IDX_LAYOUTS)
def test_idx_reader_round_trips_every_layout(tmp_path, name, sub, gz):
    written = cd.write_idx_dataset(tmp_path / sub, gz=gz)
    for split in ("train", "test"):
        ds = data.load(name, split, str(tmp_path))
        images, labels = written[split]
        assert ds.images.dtype == np.uint8 and ds.images.shape == (len(images), 28, 28, 1)
        assert ds.labels.dtype == np.int32
        np.testing.assert_array_equal(ds.images[..., 0], images)
        np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names == idx.CLASS_NAMES[name] and len(ds.class_names) == 10


def test_fashion_class_names_are_the_published_ones(tmp_path):
    cd.write_idx_dataset(tmp_path / "fashion_mnist")
    names = data.load("fashion_mnist", "test", str(tmp_path)).class_names
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot"


def test_one_folder_holds_all_datasets_and_the_env_var_selects_it(tmp_path, monkeypatch):
    written = cd.make_data_dir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert data.resolve_data_dir(None) == str(tmp_path)
    assert data.resolve_data_dir("/elsewhere") == "/elsewhere"
    mnist, fashion = data.load("mnist", "train"), data.load("fashion_mnist", "train")
    np.testing.assert_array_equal(mnist.images[..., 0], written["mnist"]["train"][0])
    np.testing.assert_array_equal(fashion.images[..., 0], written["fashion_mnist"]["train"][0])
    c10 = data.load("cifar10", "test")
    np.testing.assert_array_equal(c10.images, cd.to_nhwc(written["cifar10"]["test"][0]))
    c100 = data.load("cifar100", "train", label_mode="coarse")
    np.testing.assert_array_equal(c100.labels, written["cifar100"]["train"][2])


def test_flag_wins_over_env_var(tmp_path, monkeypatch):
    cd.write_idx_dataset(tmp_path / "flag" / "mnist", n_train=12)
    cd.write_idx_dataset(tmp_path / "env" / "mnist", n_train=7)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert len(data.load("mnist", "train").labels) == 7
    assert len(data.load("mnist", "train", str(tmp_path / "flag")).labels) == 12


def test_resolve_data_dir_without_flag_or_env_is_none():
    assert data.resolve_data_dir(None) is None and data.resolve_data_dir("") is None


# ---------------------------------------------------------------------------
# CIFAR readers.


def _write_cifar(tmp_path, name, form):
    files, arrays = cd.cifar10_files() if name == "cifar10" else cd.cifar100_files()
    top = catalog.SUBDIRS[name][0]
    if form == "folder":
        cd.write_folder(tmp_path / top, files)
    elif form == "archive":
        cd.write_archive(tmp_path / catalog.ARCHIVES[name], top, files)
    else:  # the files directly in the data folder
        cd.write_folder(tmp_path, files)
    return files, arrays


@pytest.mark.parametrize("form", ["folder", "archive", "direct"])
def test_cifar10_round_trips(tmp_path, form):
    _, arrays = _write_cifar(tmp_path, "cifar10", form)
    for split, n in (("train", 50), ("test", 10)):
        ds = data.load("cifar10", split, str(tmp_path))
        rows, labels = arrays[split]
        assert ds.images.dtype == np.uint8 and ds.images.shape == (n, 32, 32, 3)
        assert ds.labels.dtype == np.int32
        np.testing.assert_array_equal(ds.images, cd.to_nhwc(rows))
        np.testing.assert_array_equal(ds.labels, labels)
        # Planes are R, G, B, each 32x32 row-major: pixel (row 2, col 5) of image 3.
        assert tuple(ds.images[3, 2, 5]) == tuple(rows[3, [2 * 32 + 5, 1024 + 2 * 32 + 5, 2048 + 2 * 32 + 5]])
    assert ds.class_names == tuple(cd.CIFAR10_NAMES)


@pytest.mark.parametrize("form", ["folder", "archive", "direct"])
def test_cifar100_fine_and_coarse(tmp_path, form):
    _, arrays = _write_cifar(tmp_path, "cifar100", form)
    for split in ("train", "test"):
        rows, fine, coarse = arrays[split]
        ds_fine = data.load("cifar100", split, str(tmp_path))
        ds_coarse = data.load("cifar100", split, str(tmp_path), label_mode="coarse")
        np.testing.assert_array_equal(ds_fine.images, cd.to_nhwc(rows))
        np.testing.assert_array_equal(ds_coarse.images, ds_fine.images)
        np.testing.assert_array_equal(ds_fine.labels, fine)
        np.testing.assert_array_equal(ds_coarse.labels, coarse)
        assert ds_fine.labels.dtype == ds_coarse.labels.dtype == np.int32
    assert ds_fine.class_names == tuple(cd.CIFAR100_FINE)
    assert ds_coarse.class_names == tuple(cd.CIFAR100_COARSE)


def test_cifar_pickle_with_str_keys_is_accepted(tmp_path):
    files, arrays = cd.cifar10_files()
    d = pickle.loads(files["test_batch"], encoding="bytes")
    files["test_batch"] = pickle.dumps({k.decode(): v for k, v in d.items()}, protocol=4)
    cd.write_folder(tmp_path / "cifar-10-batches-py", files)
    np.testing.assert_array_equal(data.load("cifar10", "test", str(tmp_path)).labels, arrays["test"][1])


# ---------------------------------------------------------------------------
# Error sentences: arguments, missing files.


def _raises(match, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert one_sentence(message), message
    return message


def test_bad_arguments_give_one_sentence(tmp_path):
    _raises(r"Unknown dataset 'svhn'; use one of mnist, fashion_mnist, cifar10, cifar100", data.load, "svhn", "train")
    _raises(r"Unknown split 'val' .*split_validation", data.load, "mnist", "val", str(tmp_path))
    _raises(r"Unknown label_mode 'medium'", data.load, "cifar100", "train", str(tmp_path), label_mode="medium")
    _raises(r"Data folder .*nowhere does not exist.*data_dir", data.load, "mnist", "train", str(tmp_path / "nowhere"))


def test_missing_idx_files_name_files_folders_and_source(tmp_path):
    message = _raises(r"No MNIST test files found", data.load, "mnist", "test", str(tmp_path))
    for part in (
        "t10k-images-idx3-ubyte(.gz)",
        "t10k-labels-idx1-ubyte(.gz)",
        str(tmp_path / "MNIST/raw"),
        "https://yann.lecun.com/exdb/mnist/",
        "pass data_dir",
    ):
        assert part in message
    message = _raises(r"No Fashion-MNIST train files found", data.load, "fashion_mnist", "train", str(tmp_path))
    assert "github.com/zalandoresearch/fashion-mnist" in message and str(tmp_path / "FashionMNIST") in message


def test_idx_files_split_across_folders_are_missing(tmp_path):
    _images, labels = cd.write_idx_split(tmp_path / "mnist", "train", *cd.random_idx_split(5, 0), gz=True)
    labels.rename(tmp_path / labels.name)
    _raises(r"No MNIST train files found", data.load, "mnist", "train", str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_names_folder_archive_and_source(tmp_path, name):
    message = _raises(r"No CIFAR-10(0)? files found", data.load, name, "train", str(tmp_path))
    assert catalog.SUBDIRS[name][0] in message and catalog.ARCHIVES[name] in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message


def test_cifar_folder_missing_a_batch_names_it(tmp_path):
    files, _ = cd.cifar10_files()
    del files["data_batch_3"]
    cd.write_folder(tmp_path / "cifar-10-batches-py", files)
    _raises(
        r"cifar-10-batches-py lacks data_batch_3; re-download cifar-10-python.tar.gz",
        data.load,
        "cifar10",
        "train",
        str(tmp_path),
    )
    assert len(data.load("cifar10", "test", str(tmp_path)).labels) == 10  # test split does not need it


def test_complete_archive_wins_over_incomplete_folder(tmp_path):
    files, arrays = cd.cifar10_files()
    cd.write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    cd.write_folder(tmp_path / "cifar-10-batches-py", {"batches.meta": files["batches.meta"]})
    np.testing.assert_array_equal(data.load("cifar10", "train", str(tmp_path)).labels, arrays["train"][1])


def test_cifar_archive_missing_a_member_names_it(tmp_path):
    files, _ = cd.cifar100_files()
    del files["meta"]
    cd.write_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
    _raises(r"cifar-100-python.tar.gz lacks cifar-100-python/meta", data.load, "cifar100", "test", str(tmp_path))


# ---------------------------------------------------------------------------
# Error sentences: corrupt and truncated files.


def _mnist_train(tmp_path, gz=False, n=20):
    images, labels = cd.random_idx_split(n, 0)
    return cd.write_idx_split(tmp_path / "mnist", "train", images, labels, gz)


def test_idx_wrong_magic(tmp_path):
    images_path, labels_path = _mnist_train(tmp_path)
    images_path.write_bytes(labels_path.read_bytes())
    msg = _raises(
        r"train-images-idx3-ubyte has the wrong magic number 2049 \(expected 2051",
        data.load,
        "mnist",
        "train",
        str(tmp_path),
    )
    assert "yann.lecun.com" in msg


def test_idx_truncated_data(tmp_path):
    images_path, _ = _mnist_train(tmp_path, n=20)
    images_path.write_bytes(images_path.read_bytes()[:-100])
    _raises(
        r"is truncated: its header says 20 x 28 x 28 images \(15680 bytes\) but it holds 15580 bytes",
        data.load,
        "mnist",
        "train",
        str(tmp_path),
    )


def test_idx_truncated_header_and_tiny_file(tmp_path):
    images_path, _labels_path = _mnist_train(tmp_path)
    images_path.write_bytes(images_path.read_bytes()[:10])
    _raises(r"truncated inside its header", data.load, "mnist", "train", str(tmp_path))
    images_path.write_bytes(b"\x00\x00")
    _raises(r"is truncated: it holds only 2 bytes", data.load, "mnist", "train", str(tmp_path))


def test_idx_extra_bytes_is_wrong_size(tmp_path):
    _, labels_path = _mnist_train(tmp_path)
    labels_path.write_bytes(labels_path.read_bytes() + b"\x00\x01")
    _raises(
        r"train-labels-idx1-ubyte is the wrong size: its header says 20 labels",
        data.load,
        "mnist",
        "train",
        str(tmp_path),
    )


def test_idx_truncated_gzip(tmp_path):
    images_path, _ = _mnist_train(tmp_path, gz=True)
    images_path.write_bytes(images_path.read_bytes()[:-40])
    _raises(
        r"train-images-idx3-ubyte.gz is a truncated or corrupt gzip file", data.load, "mnist", "train", str(tmp_path)
    )


def test_idx_gz_name_without_gzip_content(tmp_path):
    _images_path, labels_path = _mnist_train(tmp_path, gz=True)
    labels_path.write_bytes(gzip.decompress(labels_path.read_bytes()))
    _raises(
        r"train-labels-idx1-ubyte.gz is not a gzip file despite its .gz name",
        data.load,
        "mnist",
        "train",
        str(tmp_path),
    )


def test_idx_label_out_of_range(tmp_path):
    images, labels = cd.random_idx_split(20, 0)
    labels[7] = 10
    cd.write_idx_split(tmp_path / "fashion_mnist", "test", images, labels, gz=True)
    _raises(
        r"t10k-labels-idx1-ubyte.gz has label 10 out of range 0..9", data.load, "fashion_mnist", "test", str(tmp_path)
    )


def test_idx_count_mismatch(tmp_path):
    images, labels = cd.random_idx_split(20, 0)
    cd.write_idx_split(tmp_path / "mnist", "train", images, labels[:15], gz=False)
    _raises(r"disagree: 20 images but 15 labels", data.load, "mnist", "train", str(tmp_path))


def test_idx_wrong_image_size(tmp_path):
    folder = tmp_path / "mnist"
    cd.write_bytes(folder / "train-images-idx3-ubyte", cd.idx_bytes(np.zeros((3, 32, 32))), gz=False)
    cd.write_bytes(folder / "train-labels-idx1-ubyte", cd.idx_bytes(np.zeros(3)), gz=False)
    _raises(r"holds 32x32 images, not 28x28", data.load, "mnist", "train", str(tmp_path))


def _cifar10_with(tmp_path, name, payload: bytes):
    files, _ = cd.cifar10_files()
    files[name] = payload
    cd.write_folder(tmp_path / "cifar-10-batches-py", files)


def test_cifar_garbage_pickle_names_the_file(tmp_path):
    _cifar10_with(tmp_path, "data_batch_2", b"this is not a pickle at all")
    _raises(r"data_batch_2 is not a valid CIFAR pickle \(UnpicklingError", data.load, "cifar10", "train", str(tmp_path))


def test_cifar_truncated_pickle_names_the_file(tmp_path):
    files, _ = cd.cifar10_files()
    _cifar10_with(tmp_path, "test_batch", files["test_batch"][: len(files["test_batch"]) // 2])
    _raises(r"test_batch is not a valid CIFAR pickle", data.load, "cifar10", "test", str(tmp_path))


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    _cifar10_with(tmp_path, "test_batch", pickle.dumps({b"data": collections.OrderedDict}, protocol=2))
    _raises(
        r"test_batch is not a valid CIFAR pickle \(UnpicklingError: refusing to load collections.OrderedDict\)",
        data.load,
        "cifar10",
        "test",
        str(tmp_path),
    )


@pytest.mark.parametrize(
    "batch,match",
    [
        ([1, 2], r"holds a list, not the expected dict"),
        (
            {b"data": np.zeros((10, 3072), np.float32), b"labels": [0] * 10},
            r"'data' of float32 \(10, 3072\), expected uint8",
        ),
        ({b"data": np.zeros((10, 1024), np.uint8), b"labels": [0] * 10}, r"'data' of uint8 \(10, 1024\)"),
        ({b"data": np.zeros((10, 3072), np.uint8)}, r"has no 'labels' entry"),
        ({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}, r"has 9 labels for 10 images"),
        (
            {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9 + [10]},
            r"label 10 in 'labels', out of range 0..9",
        ),
        ({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9 + [-1]}, r"label -1 in 'labels'"),
        ({b"data": np.zeros((10, 3072), np.uint8), b"labels": ["a"] * 10}, r"non-integer 'labels'"),
    ],
)
def test_cifar_bad_batch_content(tmp_path, batch, match):
    _cifar10_with(tmp_path, "test_batch", pickle.dumps(batch, protocol=2))
    message = _raises(match, data.load, "cifar10", "test", str(tmp_path))
    assert "test_batch" in message


def test_cifar_bad_meta(tmp_path):
    _cifar10_with(tmp_path, "batches.meta", pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    _raises(r"batches.meta lacks a 'label_names' list of 10 class names", data.load, "cifar10", "test", str(tmp_path))


def test_cifar100_coarse_label_out_of_range(tmp_path):
    files, _ = cd.cifar100_files()
    d = pickle.loads(files["test"], encoding="bytes")
    d[b"coarse_labels"][0] = 20
    files["test"] = pickle.dumps(d, protocol=2)
    cd.write_folder(tmp_path / "cifar-100-python", files)
    assert len(data.load("cifar100", "test", str(tmp_path)).labels) == 20  # fine labels are fine
    _raises(
        r"label 20 in 'coarse_labels', out of range 0..19",
        data.load,
        "cifar100",
        "test",
        str(tmp_path),
        label_mode="coarse",
    )


def test_cifar_truncated_archive(tmp_path):
    files, _ = cd.cifar10_files(n_per_batch=50)
    archive = cd.write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    _raises(r"cifar-10-python.tar.gz is truncated or corrupt", data.load, "cifar10", "train", str(tmp_path))


def test_cifar_archive_that_is_not_gzip(tmp_path):
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"not an archive" * 10)
    _raises(r"cifar-100-python.tar.gz is truncated or corrupt", data.load, "cifar100", "train", str(tmp_path))


# ---------------------------------------------------------------------------
# MNIST vs Fashion-MNIST identity.


def test_md5_of_the_other_dataset_is_refused(tmp_path, monkeypatch):
    images_path, _ = _mnist_train(tmp_path, gz=True)
    digest = hashlib.md5(images_path.read_bytes()).hexdigest()
    monkeypatch.setitem(idx.PUBLISHED_MD5["fashion_mnist"], "train-images-idx3-ubyte.gz", digest)
    msg = _raises(
        r"is the published Fashion-MNIST file \(its md5 matches\), not MNIST; put the MNIST files in mnist/",
        data.load,
        "mnist",
        "train",
        str(tmp_path),
    )
    assert str(images_path) in msg
    assert len(data.load("fashion_mnist", "train", str(tmp_path / "mnist")).labels) == 20


def _images_with_mean(n: int, bright_per_image: int) -> np.ndarray:
    """n images with exactly ``bright_per_image`` of 784 pixels at 255: mean = bright/784."""
    images = np.zeros((n, 28 * 28), np.uint8)
    images[:, :bright_per_image] = 255
    return images.reshape(n, 28, 28)


def test_pixel_statistics_of_the_other_dataset_are_refused(tmp_path):
    images = _images_with_mean(40, 224)  # mean 0.2857: Fashion-MNIST's, not MNIST's
    labels = np.arange(40, dtype=np.uint8) % 10
    cd.write_idx_split(tmp_path, "train", images, labels, gz=False)
    _raises(
        r"looks like Fashion-MNIST, not MNIST: its pixel mean is 0.2857", data.load, "mnist", "train", str(tmp_path)
    )
    assert data.load("fashion_mnist", "train", str(tmp_path)).images.shape == (40, 28, 28, 1)

    cd.write_idx_split(tmp_path, "test", _images_with_mean(40, 104), labels, gz=True)  # 0.1327: MNIST's
    _raises(r"looks like MNIST, not Fashion-MNIST", data.load, "fashion_mnist", "test", str(tmp_path))
    assert data.load("mnist", "test", str(tmp_path)).images.shape == (40, 28, 28, 1)


# ---------------------------------------------------------------------------
# TFDS path.


def test_without_tensorflow_tfds_path_names_the_extra_and_data_dir(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tensorflow" else real_find_spec(n, *a))
    message = _raises(
        r"needs TFDS with TensorFlow, which is not installed; run pip install '\.\[tfds\]'",
        data.load,
        "cifar100",
        "train",
    )
    assert "pass data_dir" in message and DATA_DIR_ENV in message


class _UnpreparedBuilder:
    """Stands in for a TFDS builder whose data is not on disk yet."""

    def __init__(self, error=None):
        self.error, self.downloads = error, 0

    def is_prepared(self):
        return False

    def download_and_prepare(self):
        self.downloads += 1
        if self.error:
            raise self.error


def _fake_tfds(monkeypatch, builder):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data_tfds, "tensorflow_installed", lambda: True)
    monkeypatch.setattr(tfds, "builder", lambda name, **kw: builder)


def test_tfds_without_network_fails_fast_and_names_data_dir(monkeypatch):
    builder = _UnpreparedBuilder()
    _fake_tfds(monkeypatch, builder)

    def no_route(address, timeout=None, *args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    message = _raises(
        r"TFDS cannot download mnist: storage.googleapis.com is unreachable \(no network\?\); pass data_dir",
        data.load,
        "mnist",
        "test",
    )
    assert builder.downloads == 0
    assert "yann.lecun.com" in message


def test_reachability_check_never_hangs(monkeypatch):
    release, stub_returned = threading.Event(), threading.Event()

    def stuck(*args, **kwargs):  # like a DNS lookup that ignores the timeout
        release.wait(30)
        stub_returned.set()
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", stuck)
    try:
        reachable = data_tfds.host_reachable("example.invalid", 443, timeout=0.3)
        answered_before_the_lookup_ended = not stub_returned.is_set()
    finally:
        release.set()
    assert reachable is False and answered_before_the_lookup_ended


def test_reachability_check_true_when_connect_succeeds(monkeypatch):
    class Conn:
        closed = False

        def close(self):
            Conn.closed = True

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Conn())
    assert data_tfds.host_reachable("example.org", 443) is True and Conn.closed


def test_tfds_download_failure_is_one_sentence(monkeypatch):
    builder = _UnpreparedBuilder(error=ConnectionError("read timed out\nlong trace"))
    _fake_tfds(monkeypatch, builder)
    monkeypatch.setattr(data_tfds, "host_reachable", lambda host, port, timeout=3.0: True)
    _raises(
        r"TFDS failed to download cifar10 \(ConnectionError: read timed out\); pass data_dir",
        data.load,
        "cifar10",
        "train",
    )
    assert builder.downloads == 1


def test_tfds_path_with_mock_data(monkeypatch):
    pytest.importorskip(
        "tensorflow", reason="TFDS reading needs TensorFlow (pip install '.[tfds]'), not installed here"
    )
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data_tfds, "host_reachable", lambda host, port, timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=6):
        mnist = data.load("mnist", "train")
        c100 = data.load("cifar100", "test", label_mode="coarse")
        c100_fine = data.load("cifar100", "test")
    assert mnist.images.dtype == np.uint8 and mnist.images.shape == (6, 28, 28, 1)
    assert mnist.labels.dtype == np.int32 and mnist.labels.shape == (6,) and mnist.class_names[0] == "0"
    assert c100.images.shape == (6, 32, 32, 3) and len(c100.class_names) == 20 and c100.labels.max() < 20
    assert len(c100_fine.class_names) == 100 and c100_fine.labels.max() < 100


# ---------------------------------------------------------------------------
# On-device pipeline.


@pytest.fixture(scope="module")
def made_cifar(tmp_path_factory) -> Dataset:
    root = tmp_path_factory.mktemp("pipeline")
    files, _ = cd.cifar10_files(n_per_batch=20)
    cd.write_folder(root / "cifar-10-batches-py", files)
    return data.load("cifar10", "train", str(root))


def test_channel_stats_match_numpy(made_cifar):
    mean, std = data.channel_stats(made_cifar.images)
    x = made_cifar.images.astype(np.float64) / 255
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (3,)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        data.channel_stats(x)


def test_standardize_gives_zero_mean_unit_std_per_channel(made_cifar):
    mean, std = data.channel_stats(made_cifar.images)
    z = data.standardize(made_cifar.images, mean, std)
    assert isinstance(z, jax.Array) and z.dtype == jnp.float32 and z.shape == made_cifar.images.shape
    np.testing.assert_allclose(np.asarray(z.mean(axis=(0, 1, 2))), 0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(z.std(axis=(0, 1, 2))), 1, atol=1e-4)
    np.testing.assert_allclose(np.asarray(z[0, 0, 0]), (made_cifar.images[0, 0, 0] / 255 - mean) / std, rtol=1e-5)


def test_to_device_and_batch_at(made_cifar):
    mean, std = data.channel_stats(made_cifar.images)
    split = data.to_device(made_cifar, mean, std)
    assert isinstance(split, DeviceSplit)
    assert isinstance(split.images, jax.Array) and split.images.dtype == jnp.float32
    assert isinstance(split.labels, jax.Array) and split.labels.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(split.labels), made_cifar.labels)
    rows = data.epoch_batches(jax.random.key(0), len(made_cifar.labels), 16)
    images, labels = data.batch_at(split, rows[2])
    idx = np.asarray(rows[2])
    assert images.shape == (16, 32, 32, 3) and labels.shape == (16,)
    np.testing.assert_array_equal(np.asarray(labels), made_cifar.labels[idx])
    np.testing.assert_allclose(np.asarray(images), np.asarray(split.images)[idx])


def test_epoch_batches_is_a_keyed_permutation_with_drop_remainder():
    rows = data.epoch_batches(jax.random.key(1), 103, 10)
    assert rows.dtype == jnp.int32 and rows.shape == (10, 10)
    flat = np.asarray(rows).ravel()
    assert len(np.unique(flat)) == 100 and flat.min() >= 0 and flat.max() < 103
    np.testing.assert_array_equal(rows, data.epoch_batches(jax.random.key(1), 103, 10))
    assert not np.array_equal(rows, data.epoch_batches(jax.random.key(2), 103, 10))
    jitted = jax.jit(data.epoch_batches, static_argnums=(1, 2))
    np.testing.assert_array_equal(jitted(jax.random.key(1), 103, 10), rows)
    assert data.epoch_batches(jax.random.key(0), 100, 100).shape == (1, 100)
    for bad in (0, 104):
        with pytest.raises(DataError, match=f"batch_size={bad} does not fit 103 examples"):
            data.epoch_batches(jax.random.key(0), 103, bad)


def test_split_validation_sizes_disjoint_deterministic():
    n = 60
    ds = Dataset(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1), np.arange(n, dtype=np.int32), ("a",))
    train, val = data.split_validation(ds, 15, seed=3)
    assert len(train.labels) == 45 and len(val.labels) == 15
    assert set(train.labels).isdisjoint(val.labels) and set(train.labels) | set(val.labels) == set(range(n))
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], train.labels)  # images stay paired with labels
    assert train.class_names == val.class_names == ("a",)
    again = data.split_validation(ds, 15, seed=3)
    np.testing.assert_array_equal(again[1].labels, val.labels)
    assert not np.array_equal(data.split_validation(ds, 15, seed=4)[1].labels, val.labels)
    for bad in (0, n, -1):
        _raises(rf"num_validation={bad} is out of range for a split of 60 examples", data.split_validation, ds, bad, 0)


def test_experiment_splits_hold_out_validation_and_use_the_training_portions_statistics(tmp_path):
    written = cd.write_idx_dataset(tmp_path / "mnist", n_train=30, n_test=20)
    splits, (mean, std) = data.experiment_splits("mnist", 6, str(tmp_path))
    assert [len(splits[name].labels) for name in ("train", "validation", "test")] == [24, 6, 20]
    train, validation = data.split_validation(data.load("mnist", "train", str(tmp_path)), 6, data.VALIDATION_SEED)
    np.testing.assert_array_equal(splits["validation"].labels, validation.labels)
    portion = train.images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, portion.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, portion.std(axis=(0, 1, 2)), rtol=1e-5)
    everything, (full_mean, _) = data.experiment_splits("mnist", 0, str(tmp_path))
    assert sorted(everything) == ["test", "train"] and len(everything["train"].labels) == 30
    np.testing.assert_allclose(full_mean, written["train"][0].astype(np.float64).mean() / 255, rtol=1e-5)


def _made_splits(seed=0):
    rng = np.random.default_rng(seed)
    make = lambda n: Dataset(
        rng.integers(0, 256, (n, 6, 6, 3), np.uint8), np.arange(n, dtype=np.int32) % 4, tuple("abcd")
    )
    return {"train": make(40), "test": make(12)}


def test_the_fingerprint_names_each_split_and_what_changed_in_it():
    splits = _made_splits()
    saved = data.fingerprint(splits)
    assert saved["test"]["shape"] == [12, 6, 6, 3] and saved["test"]["label_counts"] == [3, 3, 3, 3]
    copy = {name: Dataset(s.images.copy(), s.labels.copy(), s.class_names) for name, s in splits.items()}
    assert data.fingerprint_differences(saved, data.fingerprint(copy)) == []
    inverted = splits | {"test": splits["test"]._replace(images=255 - splits["test"].images)}
    changed = ["the pixel sample differs (images changed) in the test split"]
    assert data.fingerprint_differences(saved, data.fingerprint(inverted)) == changed
    relabelled = splits["train"].labels.copy()
    relabelled[0] = 1
    one_label = splits | {"train": splits["train"]._replace(labels=relabelled)}
    assert data.fingerprint_differences(saved, data.fingerprint(one_label)) == [
        "the label counts differ in the train split"
    ]
    swapped = splits["train"].labels[::-1].copy()
    both = splits | {"train": splits["train"]._replace(labels=swapped, images=splits["train"].images[::-1])}
    inverted_too = both | {"test": inverted["test"]}
    assert data.fingerprint_differences(saved, data.fingerprint(inverted_too)) == [
        "the labels differ (same counts, other order) in the train split",
        "the pixel sample differs (images changed) in the train and test splits",
    ]
    fewer = splits | {"test": Dataset(splits["test"].images[:10], splits["test"].labels[:10], tuple("abcd"))}
    shape = ["the shape differs (12x6x6x3 -> 10x6x6x3) in the test split"]
    assert data.fingerprint_differences(saved, data.fingerprint(fewer)) == shape
    validation = data.fingerprint(splits | {"validation": splits["test"]})
    assert data.fingerprint_differences(saved, validation) == ["the validation split is new"]


def test_the_pixel_sample_reaches_every_image_and_channel(monkeypatch):
    monkeypatch.setattr(fingerprints, "PIXEL_SAMPLE", 64)
    images = np.arange(32 * 8 * 8 * 3).reshape(32, 8, 8, 3)  # each value its own flat position
    sample = fingerprints.pixel_sample(images)
    assert 40 <= len(sample) <= 64  # stride 96 is moved to 97, prime to the 192 values of an image
    assert set(sample // 192) == set(range(32)) and set(sample % 3) == {0, 1, 2}


# ---------------------------------------------------------------------------
# Real data in ../shared/datasets (only on the project's build machines).


@pytest.fixture(scope="module")
def real():
    """Each real split loaded once per module."""
    if not (SHARED / "mnist").is_dir() or not (SHARED / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real datasets not present at {SHARED} (only on the project's build machines)")
    return {(n, s): data.load(n, s, str(SHARED)) for n in ("mnist", "cifar10") for s in ("train", "test")}


MNIST_TRAIN_PER_CLASS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_PER_CLASS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_shared
def test_real_mnist(real):
    train, test = real[("mnist", "train")], real[("mnist", "test")]
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert np.bincount(train.labels).tolist() == MNIST_TRAIN_PER_CLASS
    assert np.bincount(test.labels).tolist() == MNIST_TEST_PER_CLASS
    mean, std = data.channel_stats(train.images)
    np.testing.assert_allclose(mean, [0.1307], atol=1e-3)
    np.testing.assert_allclose(std, [0.3081], atol=1e-3)
    np.testing.assert_allclose(data.channel_stats(test.images)[0], [0.1325], atol=1e-3)


@needs_shared
def test_real_cifar10(real):
    train, test = real[("cifar10", "train")], real[("cifar10", "test")]
    assert train.images.shape == (50000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    assert np.bincount(train.labels).tolist() == [5000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.class_names == tuple(cd.CIFAR10_NAMES)
    mean, std = data.channel_stats(train.images)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-3)
    np.testing.assert_allclose(std, [0.2470, 0.2435, 0.2616], atol=1e-3)


@needs_shared
def test_real_mnist_is_refused_as_fashion_mnist():
    message = _raises(
        r"is the published MNIST file \(its md5 matches\), not Fashion-MNIST",
        data.load,
        "fashion_mnist",
        "test",
        str(SHARED / "mnist"),
    )
    assert "t10k-" in message
    _raises(r"No Fashion-MNIST train files found", data.load, "fashion_mnist", "train", str(SHARED))
    _raises(r"No CIFAR-100 files found", data.load, "cifar100", "test", str(SHARED))


@needs_shared
def test_real_data_through_env_var_and_direct_folder(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, os.fspath(SHARED))
    assert len(data.load("mnist", "test").labels) == 10000
    assert len(data.load("cifar10", "test", str(SHARED / "cifar-10-batches-py")).labels) == 10000


def test_made_cifar_for_smoke_runs_loads_with_the_real_layout(tmp_path):
    from tests import made_data

    made_data.write_cifar100(tmp_path, n_train=30, n_test=10)
    assert data.load("cifar100", "train", str(tmp_path)).images.shape == (30, 32, 32, 3)
    made_data.write_cifar10(tmp_path, n_per_batch=20)
    train, test = data.load("cifar10", "train", str(tmp_path)), data.load("cifar10", "test", str(tmp_path))
    assert train.images.shape == (100, 32, 32, 3) and test.images.shape == (20, 32, 32, 3)
    assert train.images.dtype == np.uint8 and len(train.class_names) == 10
    assert np.bincount(train.labels, minlength=10).tolist() == [10] * 10  # balanced, as CIFAR-10 is
