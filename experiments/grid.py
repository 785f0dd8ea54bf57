"""The paper's comparisons as one resumable grid: backprop vs SHADOW, with and without dropout, plus ablations.

    python -m experiments.grid --dataset=mnist --data_dir=../shared/datasets --root=~/rev_nets_grid

Stage 1 picks each main arm's learning rate on the validation split (seed 0,
every rate of ``LEARNING_RATES``, lowest final validation error wins).
Stage 2 runs the remaining seeds of the main arms at their chosen rate, and
the ablations, each of which changes one setting of the default SHADOW cell
and inherits its rate. Runs go one at a time, as subprocesses of the
dataset's entry point; a finished run is skipped and an interrupted one
resumes from its last checkpoint, so the driver can be stopped and started
again at any time, across sessions. ``experiments.report`` turns the runs
into tables and figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from absl import flags

from experiments import cli

_DATASET = flags.DEFINE_enum("dataset", "mnist", ["mnist", "cifar10", "cifar100"], "Which grid.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the original dataset files (passed to every run).")
_ROOT = flags.DEFINE_string("root", "~/rev_nets_grid", "Where the runs' work directories go (outside the repository).")
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the runs and their state without running anything.")


@dataclasses.dataclass(frozen=True)
class Plan:
    """A dataset's grid: shared flags, rate grid, seeds, and the cells (name -> flags)."""

    common: tuple[str, ...]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    main_cells: dict[str, tuple[str, ...]]
    ablations: dict[str, tuple[str, ...]]
    ablation_base: str = "shadow"


def _cells(dropout: float, sampling_rho: float, smooth_sigma: float):
    main = {
        "backprop": ("--shadow_layer=0",),
        "shadow": ("--shadow_layer=3",),
        "backprop_dropout": ("--shadow_layer=0", f"--dropout={dropout}"),
        "shadow_dropout": ("--shadow_layer=3", f"--dropout={dropout}"),
    }
    ablations = {
        "shadow_h2": ("--shadow_layer=2",),
        "shadow_sampling": ("--shadow_layer=3", f"--sampling_rho={sampling_rho}"),
        "shadow_smoothing": ("--shadow_layer=3", f"--smooth_sigma={smooth_sigma}"),
        "noise_twin": ("--shadow_layer=3", "--noise_twin"),
    }
    return main, ablations


PLANS = {
    "mnist": Plan(
        common=("--epochs=15", "--batch_size=128", "--warmup_epochs=1", "--num_validation=5000"),
        learning_rates=(0.02, 0.05, 0.1),
        seeds=(0, 1, 2),
        main_cells=_cells(0.3, 0.5, 1.0)[0],
        ablations=_cells(0.3, 0.5, 1.0)[1],
    ),
    "cifar10": Plan(
        common=("--epochs=12", "--batch_size=128", "--warmup_epochs=1", "--num_validation=5000", "--channels=32,64,128"),
        learning_rates=(0.02, 0.05),
        seeds=(0, 1, 2),
        main_cells=_cells(0.3, 0.5, 1.0)[0],
        ablations=_cells(0.3, 0.5, 1.0)[1],
    ),
}
PLANS["cifar100"] = dataclasses.replace(PLANS["cifar10"], seeds=(0,))


def run_name(cell: str, learning_rate: float, seed: int) -> str:
    return f"{cell}_lr{learning_rate:g}_seed{seed}"


def epochs_of(plan: Plan) -> int:
    return int(next(f for f in plan.common if f.startswith("--epochs=")).split("=")[1])


DIVERGED = "DIVERGED"  # Marker file of a run stopped by a non-finite loss.


def finished(workdir: str, epochs: int) -> bool:
    """Whether ``workdir`` holds a metrics line for the last epoch, or diverged."""
    if os.path.exists(os.path.join(workdir, DIVERGED)):
        return True
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        lines = [json.loads(x) for x in f if x.strip().endswith("}")]
    return any(m["epoch"] == epochs for m in lines)


def final_metric(workdir: str, key: str) -> float:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f if x.strip()][-1][key]


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
    if not _DRY_RUN.value:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "log.txt"), "a") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
        if code:
            with open(os.path.join(workdir, "log.txt")) as log:
                last = log.read().strip().splitlines()[-1:]
            if last and "NaN or infinite" in last[0]:
                open(os.path.join(workdir, DIVERGED), "w").close()
                print(f"diverged  {workdir}", flush=True)
                return workdir
            raise cli.UsageError(f"run {workdir} failed with exit code {code}; its log.txt says why.")
    return workdir


def choose_learning_rate(plan: Plan, root: str, cell: str) -> float | None:
    """The rate with the lowest final validation error among the finished seed-0 runs (None if any is missing)."""
    errors = {}
    for lr in plan.learning_rates:
        workdir = os.path.join(root, run_name(cell, lr, plan.seeds[0]))
        if not finished(workdir, epochs_of(plan)):
            return None
        diverged = os.path.exists(os.path.join(workdir, DIVERGED))
        errors[lr] = float("inf") if diverged else final_metric(workdir, "validation_error")
    return min(errors, key=errors.get)


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
        for seed in plan.seeds:
            run(dataset, plan, root, cell, cell_flags, chosen[plan.ablation_base], seed, data_dir)
    print(f"grid complete: {root}", flush=True)


if __name__ == "__main__":
    cli.run(main)
