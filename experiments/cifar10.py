"""CIFAR-10: the 3x3 CNN with 2x2 max pooling after each conv, plain backprop or SHADOW.

    python -m experiments.cifar10 --shadow_layer=3 --data_dir=../shared/datasets

Defaults below (CNN 32-64-128, 12 epochs, batch 128, SGD momentum 0.9,
lr 0.05, 1-epoch warm-up then cosine, 5,000 validation images, the CPU
split into 8 JAX devices). On the project's 2-core CPU: backprop ~32 s per
epoch including evaluation (about 7 minutes); seed 0 with --shadow_layer=0
reached 24.2% test error (on one device, 62 s per epoch). SHADOW's step
costs about 2.3x backprop's (its FLOP floor, see BUILD_NOTES.md), so expect
about 15-20 minutes.
"""

from absl import flags

from experiments import runner
from rev_nets import nets

_CHANNELS = flags.DEFINE_list("channels", ["32", "64", "128"], "Channels of the conv layers (one hidden layer each).")

EXPERIMENT = runner.Experiment(
    dataset="cifar10",
    build_net=lambda: nets.cifar_cnn(tuple(int(c) for c in _CHANNELS.value), num_classes=10),
    defaults=runner.CIFAR_DEFAULTS,
)

if __name__ == "__main__":
    runner.run(EXPERIMENT)
