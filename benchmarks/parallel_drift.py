"""How far data-parallel training drifts from one device over a long run.

    python -m benchmarks.parallel_drift --steps=2000

Trains the small SHADOW CNN of ``benchmarks.parallel_runs`` for ``--steps``
steps three times: on 1 device, on 8 forced host devices, and on 2
processes joined by ``jax.distributed`` (gloo collectives), each as a
subprocess, and prints how far the per-step losses and the final parameters
drift from the 1-device run. The gradient all-reduce sums in a different
order than one device does, so the runs agree to float32 rounding at first
and drift apart as training amplifies it; the tests assert agreement over
the first 5 steps only. With ``--worker_out`` this module is one worker.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import jax
import numpy as np
from absl import app, flags

from benchmarks.parallel_runs import BATCH, drift, run_processes, train_steps, worker_command, worker_env

_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps per run.")
_WORKER_OUT = flags.DEFINE_string("worker_out", None, "Worker mode: train and write losses and params to this .npz.")
_BATCH_NORM = flags.DEFINE_bool("worker_batch_norm", False, "Worker mode: the residual CNN with BatchNorm.")
_PROCESS = flags.DEFINE_list("process", None, "Worker mode, multi-process: PROCESS_ID,NUM_PROCESSES,PORT.")


def main(argv) -> None:
    del argv
    if _WORKER_OUT.value:
        if _PROCESS.value:
            process_id, num_processes, port = map(int, _PROCESS.value)
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
        train_steps(_WORKER_OUT.value, _STEPS.value, _BATCH_NORM.value)
        return
    steps = _STEPS.value
    at_steps = sorted({s for s in (1, 5, 50, 500, 5000) if s <= steps} | {steps})
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: os.path.join(tmp, f"{name}.npz") for name in ("1 device", "8 host devices", "2 processes")}
        subprocess.run(worker_command(paths["1 device"], steps), env=worker_env(1), check=True)
        subprocess.run(worker_command(paths["8 host devices"], steps), env=worker_env(8), check=True)
        run_processes(paths["2 processes"], steps, 2, timeout=60 + steps)
        runs = {name: np.load(path) for name, path in paths.items()}
        rows = {name: drift(runs["1 device"], runs[name], at_steps) for name in ("8 host devices", "2 processes")}
    columns = list(next(iter(rows.values())))
    print(f"SHADOW h3, small CNN, batch {BATCH}, {steps} steps, drift from the 1-device run (jax {jax.__version__})")
    print("| run | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.1e}" for v in values.values()) + " |")


if __name__ == "__main__":
    app.run(main)
