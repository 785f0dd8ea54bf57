"""CIFAR-100: the CIFAR-10 experiment's net and schedule with 100 outputs.

    python -m experiments.cifar100 --shadow_layer=3   # TFDS, or --data_dir=<folder with cifar-100-python/>

Its settings, their expected time: ``experiments/configs/cifar100.py``.
"""

from experiments import runner
from experiments.configs import cifar100

# At import, so --help and the docs' commands see the flags.
ENTRY = runner.define(cifar100.get_config, cifar100.ROWS)

if __name__ == "__main__":
    runner.run(ENTRY)
