"""CIFAR-10: the 3x3 CNN with 2x2 max pooling after each conv, plain backprop or SHADOW.

    python -m experiments.cifar10 --shadow_layer=3 --data_dir=../shared/datasets

Its settings, their expected time and result: ``experiments/configs/cifar10.py``.
"""

from experiments import cli, runner, settings
from experiments.configs import cifar10

ROWS = (
    cli.Flag(
        "channels",
        "model.arguments.channels",
        "Channels of the conv layers (one hidden layer each).",
        parse=settings.whole_numbers("model.arguments.channels"),
    ),
)

if __name__ == "__main__":
    runner.run(cifar10.get_config, ROWS)
