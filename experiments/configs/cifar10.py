"""CIFAR-10: the 3x3 CNN 32-64-128 with 2x2 max pooling after each conv, SHADOW from h3, 12 epochs, 8 CPU devices.

    python -m experiments.cifar10 --shadow_layer=3 --data_dir=../shared/datasets

On the project's 2-core CPU (AMD EPYC, 2026-12-01), before the default
gradient clip (``--grad_clip=0``): backprop 31 s per epoch of training (8.9
minutes a run with its evaluations), SHADOW from h3 61 s (about 15 minutes).
Seed 0, 8 devices: backprop 24.9% test error at this lr (25.6% at 0.02),
SHADOW 26.1% (the grid's earlier run: 25.8%; 25.7% at 0.02). The clip acts on
17% of SHADOW's first-epoch steps and none after (BUILD_NOTES, "SHADOW's early blow-up").
"""

import dataclasses

from experiments import cli, settings
from experiments.configs import base
from rev_nets import models, train

ROWS = (  # The flags of this net's own arguments, beside the training flags.
    cli.Flag(
        "channels",
        "model.arguments.channels",
        "Channels of the conv layers (one hidden layer each).",
        parse=settings.whole_numbers("model.arguments.channels"),
    ),
)


def get_config(dataset: str = "cifar10", num_classes: int = 10) -> train.RunConfig:
    model = models.ModelConfig("rev_nets.nets:cifar_cnn", {"channels": [32, 64, 128], "num_classes": num_classes})
    return dataclasses.replace(base.get_config(dataset, model, epochs=12), cpu_devices=8)
