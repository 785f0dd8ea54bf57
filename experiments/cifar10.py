"""CIFAR-10: the 3x3 CNN with 2x2 max pooling after each conv, plain backprop or SHADOW.

    python -m experiments.cifar10 --shadow_layer=3 --data_dir=../shared/datasets

Defaults below (CNN 32-64-128, 12 epochs, batch 128, SGD momentum 0.9,
lr 0.05, 1-epoch warm-up then cosine, 5,000 validation images, the CPU
split into 8 JAX devices). On the project's 2-core CPU (AMD EPYC,
2026-12-01): backprop 31 s per epoch of training (8.9 minutes a run with
its evaluations), SHADOW from h3 61 s (about 15 minutes). Seed 0, 8
devices: backprop 24.9% test error at this lr (25.6% at 0.02), SHADOW
26.1% (the grid's earlier run: 25.8%; 25.7% at 0.02).
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
