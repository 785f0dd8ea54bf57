"""The results grid: the runs each dataset's comparison needs (plans), run one at a time and resumably.

A plan names the shared flags, the learning-rate grid, the seeds, the main
cells (backprop and SHADOW, with and without dropout), the ablations and
the probes. Stage 1 picks each main arm's learning rate on the validation
split (seed 0, lowest final validation error wins); stage 2 runs the other
seeds at that rate, the ablations (each changes one setting of the SHADOW
cell and inherits its rate) and the probes (one seed). Runs are
subprocesses of the dataset's entry point; a finished run is skipped, an
interrupted one resumes from its last checkpoint, and one killed from
outside is started again up to ``retries`` times.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys

from rev_nets.errors import EXIT_DIVERGED, EXIT_USER_ERROR, UserError
from rev_nets.train.rundir import read_metrics, write_record


class GridError(UserError):
    """A run of the grid that refused its command, crashed, or was killed too often."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A dataset's grid: shared flags, rate grid, seeds, and the cells (name -> flags).

    ``probes`` are one-seed variants of the SHADOW cell run last, to find out
    why SHADOW does or does not help; they are judged on the validation split.
    """

    common: tuple[str, ...]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    main_cells: dict[str, tuple[str, ...]]
    ablations: dict[str, tuple[str, ...]]
    ablation_base: str = "shadow"
    ablation_seeds: tuple[int, ...] | None = None  # None: the same seeds as the main cells
    probes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


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
        probes={
            "probe_weight0.3": ("--shadow_layer=3", "--shadow_weight=0.3"),
            "probe_weight3": ("--shadow_layer=3", "--shadow_weight=3"),
            "probe_h1": ("--shadow_layer=1",),
            "probe_alpha1.15": ("--shadow_layer=3", "--alpha_scale=1.15"),
            "probe_late5": ("--shadow_layer=3", "--shadow_start_epoch=5"),
        },
    ),
    "cifar10": Plan(
        common=(
            "--epochs=12",
            "--batch_size=128",
            "--warmup_epochs=1",
            "--num_validation=5000",
            "--channels=32,64,128",
        ),
        learning_rates=(0.02, 0.05),
        seeds=(0, 1, 2),
        ablation_seeds=(0,),
        main_cells=_cells(0.3, 0.5, 1.0)[0],
        ablations=_cells(0.3, 0.5, 1.0)[1],
        probes={  # Run in this order: the spectral hypothesis first, the MNIST-neutral late start last.
            "probe_h1": ("--shadow_layer=1",),  # Twins from h1 keep ~25% of the low-frequency power, from h3 ~0.3%.
            "probe_weight0.3": ("--shadow_layer=3", "--shadow_weight=0.3"),
            # At lr 0.05 the synthetic/real input norm is 0.12-0.18 (seed 0); 1.9**3 = 6.9 brings it to ~1.
            "probe_alpha1.9": ("--shadow_layer=3", "--alpha_scale=1.9"),
            "probe_late4": ("--shadow_layer=3", "--shadow_start_epoch=4"),  # A late start was neutral on MNIST.
        },
    ),
}
PLANS["cifar100"] = dataclasses.replace(PLANS["cifar10"], seeds=(0,), learning_rates=(0.05,), probes={})


def run_name(cell: str, learning_rate: float, seed: int) -> str:
    return f"{cell}_lr{learning_rate:g}_seed{seed}"


def epochs_of(plan: Plan) -> int:
    return int(next(f for f in plan.common if f.startswith("--epochs=")).split("=")[1])


DIVERGED = "DIVERGED"  # Marker file of a run stopped by a non-finite loss.


def finished(workdir: str, epochs: int) -> bool:
    """Whether ``workdir`` holds a metrics line for the last epoch, or diverged."""
    if os.path.exists(os.path.join(workdir, DIVERGED)):
        return True
    return any(m["epoch"] == epochs for m in read_metrics(workdir))


RECORDS = ("config.json", "metrics.jsonl", DIVERGED)  # What a finished run leaves that a report reads: a few KB.


def copy_finished_records(source: str, target: str, epochs: int, *, replace: bool) -> list[str]:
    """Copies the records of every run finished under ``source`` to the same place under ``target``; returns them.

    One mechanism both ways: a report archives a grid's finished runs into the repository, and a grid restores
    them from there (``replace=False``: a run finished in ``target`` is kept as it is), so that a grid goes on
    from a fresh clone on a new machine, skipping what it had finished.
    """
    copied = []
    for folder, subfolders, _ in os.walk(source):
        if not finished(folder, epochs):
            continue
        subfolders.clear()
        relative = os.path.relpath(folder, source)
        destination = os.path.join(target, relative)
        if not replace and finished(destination, epochs):
            continue
        os.makedirs(destination, exist_ok=True)
        for name in RECORDS:
            if os.path.exists(os.path.join(folder, name)):
                _copy_record(os.path.join(folder, name), os.path.join(destination, name))
            elif os.path.exists(os.path.join(destination, name)):
                os.remove(os.path.join(destination, name))
        copied.append(relative)
    return sorted(copied)


def _copy_record(source: str, target: str) -> None:
    """Copies one record, a ``config.json`` rewritten with its lists of plain values on one line (older runs wrote
    one line per labelled index)."""
    if os.path.basename(source) != "config.json":
        shutil.copy(source, target)
        return
    with open(source) as f:
        write_record(target, json.load(f))


def restore(archive: str, root: str, epochs: int) -> list[str]:
    """Copies the finished runs archived in ``archive`` into the grid ``root`` (refusing a missing archive)."""
    if not os.path.isdir(archive):
        raise UserError(f"--restore_from has no folder {archive}: give the --workdir that experiments.report wrote.")
    restored = copy_finished_records(archive, root, epochs, replace=False)
    print(f"restored  {len(restored)} finished runs from {archive}", flush=True)
    return restored


def final_metric(workdir: str, key: str) -> float:
    return read_metrics(workdir)[-1][key]


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
        if code == EXIT_DIVERGED:
            return "diverged"
        if code == EXIT_USER_ERROR:
            raise GridError(f"run {workdir} refused its command (exit code {code}); its log.txt says why.")
        if code not in EXTERNAL_KILLS:
            raise GridError(
                f"run {workdir} crashed (exit code {code}); its log.txt says why. Rerunning the grid resumes it."
            )
        if attempt < retries:
            print(f"killed    {workdir} (signal {-code}); resuming from its last checkpoint", flush=True)
    raise GridError(f"run {workdir} was killed {retries + 1} times (signal {-code}); its log.txt says why.")


def run(
    dataset: str,
    plan: Plan,
    root: str,
    cell: str,
    cell_flags,
    learning_rate: float,
    seed: int,
    *,
    data_dir: str | None,
    retries: int,
    dry_run: bool,
) -> str:
    """Runs (or resumes, or skips) one run; returns its work directory."""
    workdir = os.path.join(root, run_name(cell, learning_rate, seed))
    if finished(workdir, epochs_of(plan)):
        print(f"done      {workdir}", flush=True)
        return workdir
    command = [sys.executable, "-m", f"experiments.{dataset}", *plan.common, *cell_flags]
    command += [f"--learning_rate={learning_rate}", f"--seed={seed}", f"--workdir={workdir}"]
    command += [f"--data_dir={data_dir}"] if data_dir else []
    print(f"{'would run' if dry_run else 'running'} {' '.join(command[1:])}", flush=True)
    if not dry_run and run_resuming(command, workdir, retries) == "diverged":
        open(os.path.join(workdir, DIVERGED), "w").close()
        print(f"diverged  {workdir}", flush=True)
    return workdir


def run_grid(
    dataset: str,
    root: str,
    data_dir: str | None = None,
    *,
    retries: int = 2,
    dry_run: bool = False,
    restore_from: str | None = None,
) -> None:
    """Runs the dataset's grid into ``root/<dataset>``: stage 1 (rates on seed 0), then seeds, ablations, probes.

    ``restore_from``: a report's folder (``experiments.report --workdir``); the finished runs archived under its
    ``<dataset>/`` are restored first, and so skipped.
    """
    plan = PLANS[dataset]
    root = os.path.join(root, dataset)
    if restore_from:
        restore(os.path.join(restore_from, dataset), root, epochs_of(plan))
    one = functools.partial(run, dataset, plan, root, data_dir=data_dir, retries=retries, dry_run=dry_run)
    chosen = {}
    for cell, cell_flags in plan.main_cells.items():
        for lr in plan.learning_rates:
            one(cell, cell_flags, lr, plan.seeds[0])
        chosen[cell] = choose_learning_rate(plan, root, cell)
    if None in chosen.values():
        return  # Dry run before stage 1 is complete.
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "chosen_learning_rates.json"), "w") as f:
        json.dump(chosen, f, indent=2)
    for cell, cell_flags in plan.main_cells.items():
        for seed in plan.seeds[1:]:
            one(cell, cell_flags, chosen[cell], seed)
    for cell, cell_flags in plan.ablations.items():
        for seed in plan.ablation_seeds or plan.seeds:
            one(cell, cell_flags, chosen[plan.ablation_base], seed)
    for cell, cell_flags in plan.probes.items():
        one(cell, cell_flags, chosen[plan.ablation_base], plan.seeds[0])
    print(f"grid complete: {root}", flush=True)
