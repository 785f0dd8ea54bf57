"""CIFAR-10: the 3x3 CNN with 2x2 max pooling after each conv, plain backprop or SHADOW.

    python -m experiments.cifar10 --shadow_layer=3 --data_dir=../shared/datasets

Its settings, their expected time and result: ``experiments/configs/cifar10.py``.
"""

from experiments import runner
from experiments.configs import cifar10

# At import, so --help and the docs' commands see the flags.
ENTRY = runner.define(cifar10.get_config, cifar10.ROWS)

if __name__ == "__main__":
    runner.run(ENTRY)
