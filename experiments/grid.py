"""The paper's comparisons as one resumable grid: backprop vs SHADOW, with and without dropout, plus ablations.

    python -m experiments.grid --dataset=mnist --data_dir=../shared/datasets --workdir=~/rev_nets_grid

Stage 1 picks each main arm's learning rate on the validation split (seed 0,
every rate of the plan's ``learning_rates``, lowest final validation error wins).
Stage 2 runs the remaining seeds of the main arms at their chosen rate, and
the ablations, each of which changes one setting of the default SHADOW cell
and inherits its rate, then the probes (one seed each, same rate). Runs go one at a time, as subprocesses of the
dataset's entry point; a finished run is skipped and an interrupted one
resumes from its last checkpoint, so the driver can be stopped and started
again at any time, across sessions; a run that crashes is started again (it
resumes) up to ``--retries`` times (``rev_nets.analysis.grid``).
``experiments.report --grid=<the same folder>`` turns the runs into tables and figures.
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli
from rev_nets.analysis import grid

_DATASET = cli.shared_flag(flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=list(grid.PLANS))
_DATA_DIR = cli.shared_flag(
    flags.DEFINE_string, "data_dir", None, "Folder with the original dataset files (passed to every run)."
)
_WORKDIR = cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    "~/rev_nets_grid",
    "Where to write the runs' directories, under <workdir>/<dataset> (outside the repository).",
)
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the runs and their state without running anything.")
_RETRIES = flags.DEFINE_integer(
    "retries", 2, "Times a run killed from outside (SIGKILL, SIGTERM, SIGHUP) is started again (it resumes)."
)


def main(argv) -> None:
    del argv
    root = os.path.expanduser(_WORKDIR.value)
    grid.run_grid(_DATASET.value, root, _DATA_DIR.value, retries=_RETRIES.value, dry_run=_DRY_RUN.value)


if __name__ == "__main__":
    cli.run(main)
