"""MNIST or Fashion-MNIST: the 784-1024x3-10 ReLU MLP, plain backprop or SHADOW.

    python -m experiments.mnist --shadow_layer=3 --data_dir=../shared/datasets
    python -m experiments.mnist --dataset=fashion_mnist --shadow_layer=3 --data_dir=<folder with fashion_mnist/>

Its settings, their expected time and result: ``experiments/configs/mnist.py``.
"""

from experiments import cli, runner
from experiments.configs import mnist

ROWS = (
    cli.Flag(
        "dataset",
        "dataset",
        "The idx-format dataset to train on (same net, same settings).",
        choices=("mnist", "fashion_mnist"),
    ),
    cli.Flag("width", "model.arguments.width", "Units per hidden layer of the MLP."),
    cli.Flag("depth", "model.arguments.depth", "Hidden layers of the MLP (SHADOW from h3 needs at least 3)."),
)

if __name__ == "__main__":
    runner.run(mnist.get_config, ROWS)
