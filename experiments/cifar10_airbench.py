"""CIFAR-10 at practical scale: the airbench94-like ReLU net with BatchNorm and its recipe.

    python -m experiments.cifar10_airbench --shadow_layer=0 --data_dir=../shared/datasets

Its settings: ``experiments/configs/cifar10_airbench.py``; their accuracy and time: ``docs/results_cifar10.md``.
"""

from experiments import runner
from experiments.configs import cifar10_airbench

# At import, so --help and the docs' commands see the flags.
ENTRY = runner.define(cifar10_airbench.get_config, cifar10_airbench.ROWS)

if __name__ == "__main__":
    runner.run(ENTRY)
