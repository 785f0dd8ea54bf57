"""Image classification data: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, from files to device batches.

``load(name, split, data_dir)`` returns uint8 NHWC images, int32 labels and the
class names.  Sources, in order:

1. An explicit folder: ``data_dir`` (the entry points' ``--data_dir``), else the environment variable
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

Modules: ``catalog`` (dataset facts), ``idx`` and ``cifar`` (the original
file formats), ``tfds``, ``sources`` (which of them a split comes from),
``pipeline`` (statistics, validation split, device arrays, batch indices),
``fingerprints`` (what a run's splits hold, for a resume's check),
``augmentation`` (per-example flips and translations inside the train step).
"""

from rev_nets.data.augmentation import augment
from rev_nets.data.catalog import DATA_DIR_ENV, DATASETS, DataError, Dataset
from rev_nets.data.fingerprints import differences as fingerprint_differences
from rev_nets.data.fingerprints import fingerprint
from rev_nets.data.pipeline import (
    VALIDATION_SEED,
    DeviceSplit,
    batch_at,
    channel_stats,
    device_splits,
    epoch_batches,
    experiment_splits,
    label_subset,
    sampled_batches,
    split_labels,
    split_validation,
    standardize,
    to_device,
)
from rev_nets.data.sources import load, resolve_data_dir

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "VALIDATION_SEED",
    "DataError",
    "Dataset",
    "DeviceSplit",
    "augment",
    "batch_at",
    "channel_stats",
    "device_splits",
    "epoch_batches",
    "experiment_splits",
    "fingerprint",
    "fingerprint_differences",
    "label_subset",
    "load",
    "resolve_data_dir",
    "sampled_batches",
    "split_labels",
    "split_validation",
    "standardize",
    "to_device",
]
