"""MNIST (or Fashion-MNIST): the 784-1024x3-10 ReLU MLP, SHADOW from h3, 15 epochs on one device.

    python -m experiments.mnist --shadow_layer=3 --data_dir=../shared/datasets

At these defaults (gradient clip 5), SHADOW from h3 ends at 1.63% mean test
error over seeds 0-7 (1.57-1.69%; ``benchmarks.stability``, 2-core Intel Xeon,
2026-12-06). Before the default clip (``--grad_clip=0``, 2-core AMD EPYC,
2026-12-01): backprop 6 s per epoch of training (2.2 minutes a run with its
evaluations), 1.56% test error (seed 0, --shadow_layer=0); SHADOW from h3
12.6 s per epoch (3.9 minutes), 1.59% at this lr and 1.60% at its
validation-chosen lr 0.1 (seed 0).
"""

from experiments import cli
from experiments.configs import base
from rev_nets import models, train

ROWS = (  # The dataset and this net's own arguments, beside the training flags.
    cli.Flag(
        "dataset",
        "dataset",
        "The idx-format dataset to train on (same net, same settings).",
        choices=("mnist", "fashion_mnist"),
    ),
    cli.Flag("width", "model.arguments.width", "Units per hidden layer of the MLP."),
    cli.Flag("depth", "model.arguments.depth", "Hidden layers of the MLP (SHADOW from h3 needs at least 3)."),
)


def get_config() -> train.RunConfig:
    return base.get_config(
        "mnist", models.ModelConfig("rev_nets.nets:mnist_mlp", {"width": 1024, "depth": 3}), epochs=15
    )
