"""MNIST or Fashion-MNIST: the 784-1024x3-10 ReLU MLP, plain backprop or SHADOW.

    python -m experiments.mnist --shadow_layer=3 --data_dir=../shared/datasets
    python -m experiments.mnist --dataset=fashion_mnist --shadow_layer=3 --data_dir=<folder with fashion_mnist/>

Its settings, their expected time and result: ``experiments/configs/mnist.py``.
"""

from experiments import runner
from experiments.configs import mnist

# At import, so --help and the docs' commands see the flags.
ENTRY = runner.define(mnist.get_config, mnist.ROWS)

if __name__ == "__main__":
    runner.run(ENTRY)
