"""CIFAR-100: the CIFAR-10 experiment's net and schedule with 100 outputs.

    python -m experiments.cifar100 --shadow_layer=3   # TFDS, or --data_dir=<folder with cifar-100-python/>

About CIFAR-10's wall time (on a 2-core x86 CPU split into 8 JAX devices,
about 9 minutes a backprop run, 15 a SHADOW run; one SHADOW epoch on made
data of CIFAR-100's size: 71 s). No CIFAR-100 result is published here yet.
"""

from experiments.configs import cifar10
from rev_nets import train

ROWS = cifar10.ROWS


def get_config() -> train.RunConfig:
    return cifar10.get_config("cifar100", num_classes=100)
