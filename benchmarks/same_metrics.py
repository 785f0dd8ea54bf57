"""Two commits train to the same numbers: a 2-epoch MNIST SHADOW run with dropout and sampling, on 1 and 8 devices.

    python -m benchmarks.same_metrics --reference=e470119 --data_dir=../shared/datasets

Clones the repository at ``--reference`` and at ``--candidate`` (default
HEAD) into a temporary folder, runs ``python -m experiments.mnist`` with
the same flags in each (SHADOW from h3, dropout 0.3, sampling rho 0.5,
2 epochs) for every ``--cpu_devices`` count, and compares the two runs'
``metrics.jsonl`` line by line, timing fields excluded. Exits 1 on any
difference. Without ``--data_dir`` it trains on made MNIST-sized data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

from benchmarks.cifar_runs import learning_metrics

_REFERENCE = flags.DEFINE_string("reference", "e470119", "The commit whose numbers are the reference.")
_CANDIDATE = flags.DEFINE_string("candidate", "HEAD", "The commit to check against it.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the MNIST files; else made data of MNIST's size.")
_DEVICES = flags.DEFINE_list("cpu_devices", ["1", "8"], "CPU device counts to compare on.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs of each run.")

REPO = Path(__file__).resolve().parents[1]
RUN_FLAGS = ("--shadow_layer=3", "--dropout=0.3", "--sampling_rho=0.5")


def checkout(commit: str, folder: Path) -> Path:
    """A clone of this repository at ``commit`` in ``folder``; returns its root."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "checkout", "-q", commit], check=True)
    return folder


def train_at(tree: Path, data_dir: str, devices: int, workdir: str) -> list[dict]:
    """The learning metrics of the MNIST entry point run from ``tree`` (its own ``rev_nets``, not the installed one)."""
    command = [
        sys.executable,
        "-m",
        "experiments.mnist",
        f"--data_dir={data_dir}",
        f"--workdir={workdir}",
        f"--epochs={_EPOCHS.value}",
        f"--cpu_devices={devices}",
        *RUN_FLAGS,
    ]
    env = os.environ | {"PYTHONPATH": str(tree)}
    subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True)
    return learning_metrics(workdir)


def main(argv) -> None:
    del argv
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The runs start in their clones, so a relative folder is made absolute here.
        data_dir = os.path.abspath(_DATA_DIR.value) if _DATA_DIR.value else None
        if not data_dir:
            from tests.made_data import write_idx

            data_dir = str(write_idx(tmp / "data"))
        trees = {
            name: checkout(commit, tmp / name)
            for name, commit in (("reference", _REFERENCE.value), ("candidate", _CANDIDATE.value))
        }
        for name, tree in trees.items():
            head = subprocess.run(
                ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
            )
            print(f"{name}: {head.stdout.strip()}", flush=True)
        for devices in map(int, _DEVICES.value):
            runs = {
                name: train_at(tree, data_dir, devices, str(tmp / f"{name}_{devices}")) for name, tree in trees.items()
            }
            equal = runs["reference"] == runs["candidate"]
            same &= equal
            last = runs["candidate"][-1]
            print(
                f"{devices} device(s): {len(runs['candidate'])} epochs, test error {last['test_error']:.4%}, "
                f"synthetic {last['test_synthetic_error']:.4%}, train loss {last['train_loss']:.6f}; "
                f"identical to the reference: {equal}",
                flush=True,
            )
            if not equal:
                for a, b in zip(runs["reference"], runs["candidate"]):
                    print({k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    app.run(main)
