"""Stress: the default CIFAR-10 job for 2,000+ steps, twice on a quiet machine and once beside two busy processes.

    python -m benchmarks.stress                                  # made data of CIFAR-10's size
    python -m benchmarks.stress --data_dir=../shared/datasets    # the real files

Each run is the real entry point with its defaults (SHADOW from h3, CNN
32-64-128, batch 128, the CPU split into 8 devices, 5,000 validation
images), for as many epochs as 2,000 steps take (6 epochs of 351 steps,
with their evaluations and checkpoints), in a fresh work directory. The
third run has two busy processes beside it, each spinning on one core
until the run ends (at most ``--busy_limit_s``). From the progress lines
(every 50 steps) it reports, per run: the exit code, whether XLA aborted,
the time per step over each 50-step block (median, 90th and 99th
percentiles, maximum) and the longest silence between two lines.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks.cifar_runs import PROGRESS, command, data_dir_or_made

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the CIFAR-10 files; else made data of its size.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps per run (rounded up to whole epochs).")
_BUSY_LIMIT_S = flags.DEFINE_integer("busy_limit_s", 3600, "A busy process stops after this long in any case.")

STEPS_PER_EPOCH = (50_000 - 5_000) // 128
BUSY = "import time\ndeadline = time.time() + {limit}\nwhile time.time() < deadline:\n    sum(i * i for i in range(10000))\n"


def run_entry_point(data_dir: str, workdir: str, epochs: int) -> dict:
    """Runs ``experiments.cifar10`` with its defaults; returns its exit code, progress-line times and output tail."""
    start, lines, tail = time.perf_counter(), [], []
    with subprocess.Popen(
        command(data_dir, workdir, epochs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            now = time.perf_counter() - start
            tail = (tail + [line])[-40:]
            match = PROGRESS.match(line)
            lines.append((now, tuple(map(int, match.groups())) if match else None))
    return {"code": process.returncode, "lines": lines, "tail": "".join(tail), "wall_s": time.perf_counter() - start}


def step_times(lines) -> list[float]:
    """Seconds per step of each block between consecutive progress lines of the same epoch."""
    progress = [(t, m) for t, m in lines if m]
    return [
        (t1 - t0) / (m1[1] - m0[1])
        for (t0, m0), (t1, m1) in itertools.pairwise(progress)
        if m0[0] == m1[0] and m1[1] > m0[1]
    ]


def summary(name: str, result: dict) -> str:
    times = np.asarray(step_times(result["lines"]))
    silence = max(np.diff([0.0] + [t for t, _ in result["lines"]]), default=0.0)
    aborted = "rendezvous" in result["tail"] or result["code"] in (-6, 134)
    p50, p90, p99 = np.percentile(times, [50, 90, 99]) if times.size else (math.nan,) * 3
    return (
        f"| {name} | {result['code']} | {'yes' if aborted else 'no'} | {times.size} | {1e3 * p50:.0f} | "
        f"{1e3 * p90:.0f} | {1e3 * p99:.0f} | {1e3 * times.max() if times.size else math.nan:.0f} | "
        f"{silence:.0f} | {result['wall_s'] / 60:.1f} |"
    )


def main(argv) -> None:
    del argv
    epochs = math.ceil(_STEPS.value / STEPS_PER_EPOCH)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = data_dir_or_made(_DATA_DIR.value, tmp)
        rows = []
        for name, busy in (("quiet 1", 0), ("quiet 2", 0), ("beside 2 busy processes", 2)):
            env = dict(os.environ, OMP_NUM_THREADS="1")
            spinners = [
                subprocess.Popen([sys.executable, "-c", BUSY.format(limit=_BUSY_LIMIT_S.value)], env=env)
                for _ in range(busy)
            ]
            try:
                result = run_entry_point(data_dir, os.path.join(tmp, name.replace(" ", "_")), epochs)
            finally:
                for spinner in spinners:
                    spinner.kill()
            rows.append(summary(name, result))
            print(f"{name}: exit code {result['code']}, {result['wall_s'] / 60:.1f} min", flush=True)
            if result["code"]:
                print(result["tail"], flush=True)
    print(
        f"\nexperiments.cifar10 defaults, {epochs} epochs x {STEPS_PER_EPOCH} steps, "
        f"{'real data' if _DATA_DIR.value else 'made data of CIFAR-10 size'}; per-step times over 50-step blocks (ms)"
    )
    print("| run | exit code | XLA abort | blocks | median | p90 | p99 | max | longest silence (s) | wall (min) |")
    print("|---" * 10 + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    app.run(main)
