"""CIFAR-100: the 3x3 CNN with 2x2 max pooling after each conv, plain backprop or SHADOW.

    python -m experiments.cifar100 --shadow_layer=3   # TFDS, or --data_dir=<folder with cifar-100-python/>

Defaults below: the CIFAR-10 experiment's net and schedule with 100
outputs, so about the same wall time as CIFAR-10 (on a 2-core x86 CPU split
into 8 JAX devices, about 9 minutes a backprop run, 15 a SHADOW run; one
SHADOW epoch on made data of CIFAR-100's size: 71 s). No
CIFAR-100 result is published here yet: the grid's numbers come from MNIST
and CIFAR-10.
"""

from absl import flags

from experiments import runner
from rev_nets import nets

_CHANNELS = flags.DEFINE_list("channels", ["32", "64", "128"], "Channels of the conv layers (one hidden layer each).")

EXPERIMENT = runner.Experiment(
    dataset="cifar100",
    build_net=lambda: nets.cifar_cnn(tuple(int(c) for c in _CHANNELS.value), num_classes=100),
    defaults=runner.CIFAR_DEFAULTS,
)

if __name__ == "__main__":
    runner.run(EXPERIMENT)
