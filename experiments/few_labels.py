"""The few-label grid: does SHADOW (supervised, or as consistency on unlabelled images) need fewer labels?

    python -m experiments.few_labels --dataset=mnist --data_dir=../shared/datasets --workdir=~/rev_nets_grid

Every arm trains for the same number of steps (MNIST 6,435, CIFAR-10 4,212)
from N labels (balanced, drawn by the seed outside the 1,000 validation
images). Supervised arms: backprop, SHADOW from h3, the noise-twin placebo;
semi-supervised arms: consistency of the softmax under a SHADOW twin, a
matched-energy noise twin, or (MNIST) fixed Gaussian noise. Each arm's
learning rate, consistency weight and noise are chosen on validation (seed 0);
then the other seeds run. One run at a time, resumable at any point;
``experiments.few_labels_report`` turns the runs into tables and figures
(``rev_nets.analysis.few_labels``).
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli
from rev_nets.analysis import few_labels

_DATASET = cli.shared_flag(flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=list(few_labels.PLANS))
_DATA_DIR = cli.shared_flag(
    flags.DEFINE_string, "data_dir", None, "Folder with the original dataset files (passed to every run)."
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    "~/rev_nets_grid",
    "Where to write the runs, under <workdir>/<dataset>_labels/labels<N>/ (outside the repository).",
)
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the runs and their state without running anything.")
_RETRIES = flags.DEFINE_integer(
    "retries", 2, "Times a run killed from outside (SIGKILL, SIGTERM, SIGHUP) is started again (it resumes)."
)


def main(argv) -> None:
    del argv
    root = os.path.expanduser(_WORKDIR.value)
    few_labels.run_grid(_DATASET.value, root, _DATA_DIR.value, retries=_RETRIES.value, dry_run=_DRY_RUN.value)


if __name__ == "__main__":
    cli.run(main)
