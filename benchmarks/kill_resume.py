"""A CIFAR-10 run killed at a random step mid-epoch, started again with the same command, ends as an unkilled one.

    python -m benchmarks.kill_resume --data_dir=../shared/datasets    # the real files (else made data)

Runs ``experiments.cifar10`` with its defaults (8 CPU devices, SHADOW
from h3) for ``--epochs`` epochs twice: once straight through, once
SIGKILLed at a random moment of epoch ``--kill_epoch`` (after its first
progress line) and then started again with the same command, which
resumes from its last checkpoint and repeats the partial epoch. It
prints where the kill landed and compares the two runs' ``metrics.jsonl``
line by line, timing fields excluded.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks.cifar_runs import PROGRESS, command, data_dir_or_made, learning_metrics

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the CIFAR-10 files; else made data of its size.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs of each run.")
_KILL_EPOCH = flags.DEFINE_integer("kill_epoch", 2, "The epoch in which the second run is killed.")
_SEED = flags.DEFINE_integer("seed", None, "Seed of the kill's moment (default: drawn from the clock).")


def run_and_kill(cmd: list[str], kill_epoch: int, rng: random.Random) -> str:
    """Starts ``cmd``; once epoch ``kill_epoch`` has printed its first progress line, SIGKILLs it a random
    0-30 s later (within the epoch); returns the last progress line seen."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = ""
    for line in process.stdout:
        match = PROGRESS.match(line)
        if match:
            last = line.strip()
            if int(match.group(1)) == kill_epoch:
                break
    time.sleep(rng.uniform(0, 30))
    process.send_signal(signal.SIGKILL)
    for line in process.stdout:
        if PROGRESS.match(line):
            last = line.strip()
    process.wait()
    return last


def main(argv) -> None:
    del argv
    seed = _SEED.value if _SEED.value is not None else time.time_ns() % 2**31
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = data_dir_or_made(_DATA_DIR.value, tmp)
        straight, killed = os.path.join(tmp, "straight"), os.path.join(tmp, "killed")
        start = time.perf_counter()
        subprocess.run(command(data_dir, straight, _EPOCHS.value), check=True, capture_output=True)
        print(f"uninterrupted run: {time.perf_counter() - start:.0f} s", flush=True)
        last = run_and_kill(command(data_dir, killed, _EPOCHS.value), _KILL_EPOCH.value, rng)
        kept = len(learning_metrics(killed))
        print(f"killed (seed {seed}) after: {last!r}; metric lines on disk: {kept}", flush=True)
        resumed = subprocess.run(command(data_dir, killed, _EPOCHS.value), check=True, capture_output=True, text=True)
        print(next((line for line in resumed.stdout.splitlines() if line.startswith("resumed")), "no resume line"))
        a, b = learning_metrics(straight), learning_metrics(killed)
    same = a == b
    print(f"{len(a)} epochs; learning metrics identical to the uninterrupted run: {same}")
    if not same:
        for line_a, line_b in zip(a, b):
            diff = {k: (line_a.get(k), line_b.get(k)) for k in line_a if line_a.get(k) != line_b.get(k)}
            print(f"epoch {line_a['epoch']}: {diff}")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
