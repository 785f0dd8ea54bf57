"""The paper's comparisons as resumable grids: backprop vs SHADOW at full labels, and with few labels.

    python -m experiments.grid --dataset=mnist --data_dir=../shared/datasets --workdir=~/rev_nets_grid
    python -m experiments.grid --few_labels --dataset=mnist --data_dir=../shared/datasets --workdir=~/rev_nets_grid

Full labels (plans in ``experiments/configs/grid_plans.py``): stage 1
picks each main arm's learning rate on the validation split (seed 0, every
rate of the plan's ``learning_rates``, lowest final validation error wins).
Stage 2 runs the remaining seeds of the main arms at their chosen rate, and
the ablations, each of which changes one setting of the default SHADOW cell
and inherits its rate, then the probes (one seed each, same rate).

``--dataset=cifar10_airbench`` (``rev_nets.analysis.scale_grid``): the verdict at practical scale, hours per
run: backprop's rate, then SHADOW's source layer and rate, on validation; then the final runs (backprop,
SHADOW, the placebo) on all 50,000 training images.

``--few_labels`` (plans in ``experiments/configs/few_label_plans.py``): every
arm trains for the same number of steps (MNIST 6,435, CIFAR-10 4,212) from N
labels (balanced, drawn by the seed outside the 1,000 validation images).
Supervised arms: backprop, SHADOW from h3, the noise-twin placebo;
semi-supervised arms: consistency of the softmax under a SHADOW twin, a
matched-energy noise twin, or (MNIST) fixed Gaussian noise. Each arm's
learning rate, consistency weight and noise are chosen on validation (seed
0), one at a time; then the other seeds run, then the probes.

Both are sweeps (``rev_nets.analysis.sweep``): runs go one at a time, as
subprocesses of the dataset's entry point; a finished run is skipped and an
interrupted one resumes from its last checkpoint, so the driver can be
stopped and started again at any time; a run killed from outside is started
again (it resumes) up to ``--retries`` times. SIGTERM or SIGINT is forwarded
to the running run, which saves; the grid then stops with one line and
``errors.EXIT_STOPPED``, and the same command goes on.
``experiments.report`` with the same ``--grid`` folder (and
``--few_labels``) turns the runs into tables and figures, and archives the
finished runs' records (config and metrics, a few KB each) under its
``--workdir``. ``--archive=<that folder>`` makes the grid do the same as
each run finishes, and copy the archived runs back before it starts: commit
the folder, and the grid goes on from a fresh clone on another machine,
where only the repository survived:

    python -m experiments.grid --few_labels --dataset=cifar10 --archive=results/few_labels \
        --data_dir=../shared/datasets --workdir=~/rev_nets_grid
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli, configs
from experiments.configs import grid_plans
from rev_nets.analysis import sweep

_DATASET = cli.shared_flag(flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=list(grid_plans.PLANS))
_FEW_LABELS = cli.shared_flag(
    flags.DEFINE_boolean, "few_labels", False, "The few-label grid (MNIST, CIFAR-10) instead of the full-label one."
)
_DATA_DIR = cli.shared_flag(
    flags.DEFINE_string, "data_dir", None, "Folder with the original dataset files (passed to every run)."
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    "~/rev_nets_grid",
    "Where to write the runs' directories, under <workdir>/<dataset> (few labels: <workdir>/<dataset>_labels), "
    "outside the repository.",
)
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the runs and their state without running anything.")
_ARCHIVE = flags.DEFINE_string(
    "archive",
    None,
    "A report's --workdir in the repository (results, results/few_labels): its archived finished runs are copied "
    "into the grid first and skipped, and each run's records are copied there as it finishes; committed, they let "
    "the grid go on from a fresh clone on a new machine.",
)
_RETRIES = flags.DEFINE_integer(
    "retries",
    2,
    "Times a run killed from outside (SIGKILL, SIGTERM, SIGHUP) is started again (it resumes).",
    lower_bound=0,
)


def main(argv) -> None:
    del argv
    dataset, few_labels = _DATASET.value, _FEW_LABELS.value
    plan = configs.plan(dataset, few_labels)
    archive = _ARCHIVE.value and cli.existing(_ARCHIVE.value, "archive")
    sweep.run_sweep(
        plan.to_sweep(),
        configs.grid_root(cli.workdir(_WORKDIR.value), dataset, few_labels),
        configs.entry_point(dataset, _DATA_DIR.value and cli.existing(_DATA_DIR.value, "data_dir")),
        retries=_RETRIES.value,
        dry_run=_DRY_RUN.value,
        archive=archive and os.path.join(archive, dataset),
        stop=cli.stop_on_signals(),
    )


if __name__ == "__main__":
    cli.run(main)
