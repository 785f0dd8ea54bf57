"""Synthetic images from every hidden layer of a net at initialisation.

    python -m experiments.quicklook --data_dir=../shared/datasets --workdir=/tmp/quicklook

Builds the default CIFAR CNN (or the MNIST MLP with ``--dataset=mnist``),
forwards real test images, runs the net backwards with transposed weights
from h1, h2 and h3 (reusing the forward pass's max-pooling switches) and
writes ``figures/quicklook_<dataset>.png``: real images beside their
synthetic twins. Takes a few seconds on a laptop CPU.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import flags

from experiments import cli
from rev_nets import data, generator, nets, plots

_DATASET = flags.DEFINE_enum("dataset", "cifar10", ["cifar10", "mnist"], "Which dataset and default net.")
_DATA_DIR = cli.shared_flag(
    flags.DEFINE_string,
    "data_dir",
    None,
    f"Folder with the original dataset files; else ${data.DATA_DIR_ENV}; else TFDS.",
)
_WORKDIR = cli.shared_flag(flags.DEFINE_string, "workdir", "runs/quicklook", "Where figures/ is written.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 8, "Images per row of the grid.", lower_bound=1, upper_bound=64)
_SEED = cli.shared_flag(flags.DEFINE_integer, "seed", 0, "Seed of the net's initial weights.")


def synthetic_rows(net: nets.Net, params, x) -> dict[str, np.ndarray]:
    """Real images and, per hidden layer l, ``G(h_l)`` with the real switches."""
    _, hiddens = nets.forward(net, params, x)
    rows = {"real": np.asarray(x)}
    for layer in range(1, net.depth + 1):
        rows[f"from h{layer}"] = np.asarray(generator.generate_from(net, params, hiddens, layer))
    return rows


def main(argv: list[str]) -> None:
    del argv
    test = data.load(_DATASET.value, "test", data.resolve_data_dir(_DATA_DIR.value))
    mean, std = data.channel_stats(test.images)
    x = data.standardize(test.images[: _NUM_IMAGES.value], mean, std)
    net = nets.cifar_cnn() if _DATASET.value == "cifar10" else nets.mnist_mlp()
    params = nets.init(jax.random.key(_SEED.value), net)
    path = os.path.join(_WORKDIR.value, "figures", f"quicklook_{_DATASET.value}.png")
    plots.image_grid(
        synthetic_rows(net, params, x), path, title=f"{_DATASET.value}: net at initialisation, run backwards"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
