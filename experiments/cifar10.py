"""CIFAR-10: the 3x3 CNN with 2x2 max pooling after each conv, plain backprop or SHADOW.

    python -m experiments.cifar10 --shadow_layer=3 --data_dir=../shared/datasets

Defaults below; expected wall time and results: see README.md's results table.
"""

from absl import flags

from experiments import runner
from rev_nets import nets

_CHANNELS = flags.DEFINE_list("channels", ["32", "64", "128"], "Channels of the conv layers (one hidden layer each).")

EXPERIMENT = runner.Experiment(
    dataset="cifar10",
    build_net=lambda: nets.cifar_cnn(tuple(int(c) for c in _CHANNELS.value), num_classes=10),
    defaults={"epochs": 12, "batch_size": 128, "learning_rate": 0.05, "warmup_epochs": 1.0, "num_validation": 5000},
)

if __name__ == "__main__":
    runner.run(EXPERIMENT)
