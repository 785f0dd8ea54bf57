"""The paper's comparisons as one resumable grid: backprop vs SHADOW, with and without dropout, plus ablations.

    python -m experiments.grid --dataset=mnist --data_dir=../shared/datasets --root=~/rev_nets_grid

Stage 1 picks each main arm's learning rate on the validation split (seed 0,
every rate of the plan's ``learning_rates``, lowest final validation error wins).
Stage 2 runs the remaining seeds of the main arms at their chosen rate, and
the ablations, each of which changes one setting of the default SHADOW cell
and inherits its rate, then the probes (one seed each, same rate). Runs go one at a time, as subprocesses of the
dataset's entry point; a finished run is skipped and an interrupted one
resumes from its last checkpoint, so the driver can be stopped and started
again at any time, across sessions; a run that crashes is started again (it
resumes) up to ``--retries`` times. ``experiments.report`` turns the runs
into tables and figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from absl import flags

from experiments import cli
from experiments.plans import DIVERGED, PLANS, Plan, choose_learning_rate, epochs_of, finished, run_name

_DATASET = cli.shared_flag(
    flags.DEFINE_enum, "dataset", "mnist", "Which grid.", enum_values=["mnist", "cifar10", "cifar100"]
)
_DATA_DIR = cli.shared_flag(
    flags.DEFINE_string, "data_dir", None, "Folder with the original dataset files (passed to every run)."
)
_ROOT = cli.shared_flag(
    flags.DEFINE_string, "root", "~/rev_nets_grid", "Where the runs' work directories go (outside the repository)."
)
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the runs and their state without running anything.")
_RETRIES = flags.DEFINE_integer(
    "retries", 2, "Times a run killed from outside (SIGKILL, SIGTERM, SIGHUP) is started again (it resumes)."
)


EXTERNAL_KILLS = (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGHUP)  # subprocess's codes for death by these signals


def run_resuming(command: list[str], workdir: str, retries: int) -> str:
    """Runs ``command``, output appended to ``workdir/log.txt``; a run killed from outside (SIGKILL, SIGTERM,
    SIGHUP: the OOM killer, a shutdown) is started again, resuming, up to ``retries`` times.

    Returns "done", or "diverged" for a non-finite loss (a restart would repeat it). Any other failure stops
    the grid at once with a sentence: a refused command would be refused again, and a crash of the run's own
    (an exception, or an abort such as XLA's) is a bug that a retry would hide.
    """
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "log.txt")
    for attempt in range(retries + 1):
        with open(log_path, "a") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
        if not code:
            return "done"
        if code == cli.EXIT_DIVERGED:
            return "diverged"
        if code == cli.EXIT_USER_ERROR:
            raise cli.UsageError(f"run {workdir} refused its command (exit code {code}); its log.txt says why.")
        if code not in EXTERNAL_KILLS:
            raise cli.UsageError(
                f"run {workdir} crashed (exit code {code}); its log.txt says why. Rerunning the grid resumes it."
            )
        if attempt < retries:
            print(f"killed    {workdir} (signal {-code}); resuming from its last checkpoint", flush=True)
    raise cli.UsageError(f"run {workdir} was killed {retries + 1} times (signal {-code}); its log.txt says why.")


def run(dataset: str, plan: Plan, root: str, cell: str, cell_flags, learning_rate: float, seed: int, data_dir) -> str:
    """Runs (or resumes, or skips) one run; returns its work directory."""
    workdir = os.path.join(root, run_name(cell, learning_rate, seed))
    if finished(workdir, epochs_of(plan)):
        print(f"done      {workdir}", flush=True)
        return workdir
    command = [sys.executable, "-m", f"experiments.{dataset}", *plan.common, *cell_flags]
    command += [f"--learning_rate={learning_rate}", f"--seed={seed}", f"--workdir={workdir}"]
    command += [f"--data_dir={data_dir}"] if data_dir else []
    print(f"{'would run' if _DRY_RUN.value else 'running'} {' '.join(command[1:])}", flush=True)
    if not _DRY_RUN.value and run_resuming(command, workdir, _RETRIES.value) == "diverged":
        open(os.path.join(workdir, DIVERGED), "w").close()
        print(f"diverged  {workdir}", flush=True)
    return workdir


def main(argv) -> None:
    del argv
    dataset, plan = _DATASET.value, PLANS[_DATASET.value]
    root = os.path.join(os.path.expanduser(_ROOT.value), dataset)
    data_dir = _DATA_DIR.value
    chosen = {}
    for cell, cell_flags in plan.main_cells.items():
        for lr in plan.learning_rates:
            run(dataset, plan, root, cell, cell_flags, lr, plan.seeds[0], data_dir)
        chosen[cell] = choose_learning_rate(plan, root, cell)
    if None in chosen.values():
        return  # Dry run before stage 1 is complete.
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "chosen_learning_rates.json"), "w") as f:
        json.dump(chosen, f, indent=2)
    for cell, cell_flags in plan.main_cells.items():
        for seed in plan.seeds[1:]:
            run(dataset, plan, root, cell, cell_flags, chosen[cell], seed, data_dir)
    for cell, cell_flags in plan.ablations.items():
        for seed in plan.ablation_seeds or plan.seeds:
            run(dataset, plan, root, cell, cell_flags, chosen[plan.ablation_base], seed, data_dir)
    for cell, cell_flags in plan.probes.items():
        run(dataset, plan, root, cell, cell_flags, chosen[plan.ablation_base], plan.seeds[0], data_dir)
    print(f"grid complete: {root}", flush=True)


if __name__ == "__main__":
    cli.run(main)
