"""Do the entry points' default settings train stably? Counts divergences over seeds, run lengths and label counts.

    python -m benchmarks.stability --data_dir=../shared/datasets

Runs every cell of ``cells()`` as its own entry-point command (what a user
types, defaults included) in ``--root``/<cell>, one at a time, and appends
each outcome to ``--root``/outcomes.jsonl: exit status, whether the run
diverged, its last test error, and what shows the twins still train (the
synthetic cross-entropy and the twin/real input norm ratio of the last
epoch) and where gradient clipping acted (the fraction of steps clipped in
the first and last epochs). A second call skips the cells already recorded,
and a run killed midway resumes from its checkpoint, so the benchmark can
be stopped and started again at will (about 3 hours on a 2-core CPU). The
table goes to ``benchmarks/results/stability.md``. ``--extra`` adds flags
to every command (e.g. ``--extra=--grad_clip=0`` with another ``--root``
measures the settings before the default clip).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

from absl import app, flags

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/datasets", "Folder with the MNIST and CIFAR-10 files.")
_ROOT = flags.DEFINE_string("root", "~/.cache/rev_nets_stability", "Where the runs and their outcomes are kept.")
_GROUPS = flags.DEFINE_list("groups", ["few_label", "full_data", "no_warmup", "cifar10"], "Which groups to run.")
_EXTRA = flags.DEFINE_list("extra", [], "Flags added to every command, e.g. --grad_clip=0.")
_PARALLEL = flags.DEFINE_integer("parallel", 2, "Runs at once (a short run is mostly start-up and evaluation).")
_TABLE = flags.DEFINE_string("table", "benchmarks/results/stability.md", "Where the table is written ('' = none).")

ARMS = {"shadow": "--shadow_layer=3", "backprop": "--shadow_layer=0"}


def cells() -> dict[str, list[tuple[str, str, tuple[str, ...]]]]:
    """group -> [(cell name, entry point, flags)]: the issue's grid of short few-label runs (where SHADOW blew up),
    full-data MNIST at its defaults, full-data MNIST without warm-up in one epoch, and few-label CIFAR-10."""
    return {
        "few_label": [
            (
                f"mnist_l{labels}_steps{steps}_{arm}_seed{seed}",
                "mnist",
                (f"--num_labels={labels}", f"--steps={steps}", flag, f"--seed={seed}"),
            )
            for labels in (100, 1000)
            for steps in (60, 120, 240, 600)
            for arm, flag in ARMS.items()
            for seed in range(8)
        ],
        "full_data": [(f"mnist_defaults_seed{seed}", "mnist", (f"--seed={seed}",)) for seed in range(8)],
        "no_warmup": [
            (f"mnist_warmup0_epochs1_seed{seed}", "mnist", ("--warmup_epochs=0", "--epochs=1", f"--seed={seed}"))
            for seed in range(8)
        ],
        "cifar10": [
            (f"cifar10_l4000_seed{seed}", "cifar10", ("--num_labels=4000", f"--seed={seed}")) for seed in range(3)
        ],
    }


def read_lines(path: Path) -> list[dict]:
    """JSON lines of ``path`` (missing: none); ``null`` and bare NaN both read as NaN."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: math.nan if v is None else v for k, v in line.items()} for line in lines]


def outcome(name: str, workdir: Path, status: int, seconds: float) -> dict:
    """What one finished command shows: diverged or not, and its last epoch's numbers."""
    lines = read_lines(workdir / "metrics.jsonl")
    last, first = (lines[-1], lines[0]) if lines else ({}, {})
    return {
        "cell": name,
        "status": status,
        "diverged": status == 3 or (workdir / "DIVERGED").exists(),
        "epochs": len(lines),
        "test_error": last.get("test_error"),
        "ce_synthetic": last.get("train_ce_synthetic"),
        "norm_ratio": last.get("train_norm_ratio"),
        "max_train_loss": max((line["train_loss"] for line in lines), default=None),
        "clipped_first": first.get("train_clipped"),
        "clipped_last": last.get("train_clipped"),
        "seconds": round(seconds, 1),
    }


def code_version() -> str:
    """The commit of the code the runs import (they start in this folder), so that the table says what it measured."""
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def run_cell(root: Path, name: str, entry: str, args: tuple[str, ...]) -> dict:
    """Runs (or resumes) one cell's command; its output goes to ``<cell>/output.txt``."""
    workdir = root / name
    workdir.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", f"experiments.{entry}", f"--data_dir={_DATA_DIR.value}", f"--workdir={workdir}"]
    command += [*args, *_EXTRA.value]
    start = time.perf_counter()
    with open(root / f"{name}.output.txt", "a") as output:
        status = subprocess.run(command, check=False, stdout=output, stderr=subprocess.STDOUT).returncode
    return outcome(name, workdir, status, time.perf_counter() - start) | {"commit": code_version()}


def strict(result: dict) -> dict:
    """``result`` with non-finite numbers as ``null``, so that its line is strict JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in result.items()}


def group_of(cell: str) -> str:
    """A row of the table: the cell's name without its seed."""
    return cell.rsplit("_seed", 1)[0]


def table(outcomes: list[dict]) -> str:
    """One markdown row per cell without its seed: runs, divergences, and means over the runs that finished."""
    rows = {}
    for result in outcomes:
        rows.setdefault(group_of(result["cell"]), []).append(result)

    def mean(results, key, scale=1.0, digits=2, style="f"):
        values = [r[key] for r in results if r[key] is not None and not math.isnan(r[key]) and not r["diverged"]]
        return f"{scale * sum(values) / len(values):.{digits}{style}}" if values else "-"

    header = (
        "| cells (seeds) | runs | diverged | test error % | synthetic CE | twin/real norm | clipped, first epoch "
        "| clipped, last epoch | minutes per run |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {group} | {len(results)} | {sum(r['diverged'] for r in results)} | {mean(results, 'test_error', 100)} "
        f"| {mean(results, 'ce_synthetic', style='g')} | {mean(results, 'norm_ratio')} "
        f"| {mean(results, 'clipped_first', digits=3)} | {mean(results, 'clipped_last', digits=3)} "
        f"| {mean(results, 'seconds', 1 / 60, 1)} |\n"
        for group, results in rows.items()
    )
    return header + body


def main(argv) -> None:
    del argv
    root = Path(os.path.expanduser(_ROOT.value))
    root.mkdir(parents=True, exist_ok=True)
    record = root / "outcomes.jsonl"
    done = {line["cell"] for line in read_lines(record)}
    todo = [cell for group in _GROUPS.value for cell in cells()[group] if cell[0] not in done]
    with futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
        for finished in futures.as_completed([pool.submit(run_cell, root, *cell) for cell in todo]):
            result = finished.result()
            with open(record, "a") as out:
                out.write(json.dumps(strict(result)) + "\n")
            print(json.dumps(result), flush=True)
    outcomes = read_lines(record)
    commits = sorted({line.get("commit", "unrecorded") for line in outcomes})
    diverged = [r["cell"] for r in outcomes if r["diverged"]]
    text = (
        f"# python -m benchmarks.stability  ({cpu_name()}, {os.cpu_count()} cores, {_PARALLEL.value} runs at a time)\n"
        f"{len(outcomes)} of {sum(map(len, cells().values()))} cells, code {', '.join(commits)}; extra flags: "
        f"{' '.join(_EXTRA.value) or 'none'}; "
        f"{len(diverged)} of {len(outcomes)} runs diverged{': ' + ', '.join(diverged) if diverged else ''}.\n\n"
        f"{table(outcomes)}"
    )
    print(text)
    if _TABLE.value:
        Path(_TABLE.value).write_text(text)


def cpu_name() -> str:
    """This machine's CPU model, from /proc/cpuinfo (Linux), else the platform's word for it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    app.run(main)
