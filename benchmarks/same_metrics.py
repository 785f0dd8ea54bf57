"""Two commits train to the same numbers: the same commands' learning metrics, bit for bit, on 1 and 8 devices.

    python -m benchmarks.same_metrics --reference=3b9db2f --data_dir=../shared/datasets

Clones the repository at ``--reference`` and at ``--candidate`` (default
HEAD) into a temporary folder and runs each of ``RUNS`` from both, for every
``--cpu_devices`` count (each count is compared with itself), then compares
the two ``metrics.jsonl`` line by line, timing fields excluded. Exits 1 on
any difference. The reference's metrics are kept under ``--cache`` by
commit, so a second candidate costs only its own runs. Without
``--data_dir`` the runs train on made data of the real datasets' sizes.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

# name -> (entry point, flags): what the checked code paths need (dropout, sampling, 8 devices, few labels), at
# the archive's settings (no gradient clipping, which the entry points have defaulted to since the reference).
RUNS = {
    "mnist_shadow_dropout_sampling": (
        "mnist",
        ("--epochs=2", "--shadow_layer=3", "--dropout=0.3", "--sampling_rho=0.5", "--grad_clip=0"),
    ),
    "cifar10_shadow": ("cifar10", ("--epochs=1", "--shadow_layer=3", "--grad_clip=0")),
    "mnist_few_label_consistency": (
        "mnist",
        ("--num_labels=100", "--steps=60", "--shadow_layer=0", "--consistency=shadow", "--grad_clip=0"),
    ),
}
# The labelled batch, min(batch_size, num_labels) = 100, does not split over 8 devices (both commits refuse it).
EIGHT_DEVICE_FLAGS = {"mnist_few_label_consistency": ("--batch_size=96",)}

_REFERENCE = flags.DEFINE_string("reference", "3b9db2f", "The commit whose numbers are the reference.")
_CANDIDATE = flags.DEFINE_string("candidate", "HEAD", "The commit to check against it.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the MNIST and CIFAR-10 files; else made data.")
_DEVICES = flags.DEFINE_list("cpu_devices", ["1", "8"], "CPU device counts to compare on.")
_RUNS = flags.DEFINE_list("runs", list(RUNS), "Which of the runs to compare.")
_CACHE = flags.DEFINE_string("cache", "~/.cache/rev_nets_same_metrics", "Where the reference's metrics are kept.")

REPO = Path(__file__).resolve().parents[1]


def learning_metrics(workdir: str) -> list[dict]:
    """The run's metric lines without their timing fields, read as plain JSON (no code of either commit)."""
    lines = Path(workdir, "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if not k.endswith("_s") and k != "images_per_s"} for line in lines
    ]


def same_fields(lines: list[dict], reference: list[dict]) -> list[dict]:
    """``lines`` with only the fields the reference's lines have: metrics added since (e.g. the gradient norm) are
    new numbers, not changed ones."""
    return [{k: line[k] for k in ref if k in line} for line, ref in zip(lines, reference)] + lines[len(reference) :]


def checkout(commit: str, folder: Path) -> tuple[Path, str]:
    """A clone of this repository at ``commit`` in ``folder``; returns its root and full commit hash."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "checkout", "-q", commit], check=True)
    head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return folder, head.stdout.strip()


def train_at(tree: Path, run: str, data_dir: str, devices: int, workdir: str) -> list[dict]:
    """The learning metrics of ``run`` from ``tree`` (its own ``rev_nets``, not the installed one)."""
    module, run_flags = RUNS[run]
    command = [sys.executable, "-m", f"experiments.{module}", f"--data_dir={data_dir}", f"--workdir={workdir}"]
    command += [*run_flags, *(EIGHT_DEVICE_FLAGS.get(run, ()) if devices == 8 else ()), f"--cpu_devices={devices}"]
    env = os.environ | {"PYTHONPATH": str(tree)}
    subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True)
    return learning_metrics(workdir)


def cached(path: Path, compute) -> list[dict]:
    """The JSON at ``path``, computed and written there first if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(compute()))
    return json.loads(path.read_text())


def made_data(folder: Path) -> str:
    from tests.made_data import write_cifar10, write_idx

    write_idx(folder)
    write_cifar10(folder)
    return str(folder)


def main(argv) -> None:
    del argv
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The runs start in their clones, so a relative folder is made absolute here.
        data_dir = os.path.abspath(_DATA_DIR.value) if _DATA_DIR.value else made_data(tmp / "data")
        reference, reference_commit = checkout(_REFERENCE.value, tmp / "reference")
        candidate, candidate_commit = checkout(_CANDIDATE.value, tmp / "candidate")
        print(f"reference: {reference_commit[:7]}\ncandidate: {candidate_commit[:7]}", flush=True)
        data_tag = "real" if _DATA_DIR.value else "made"
        cache = Path(os.path.expanduser(_CACHE.value)) / reference_commit / data_tag
        for run in _RUNS.value:
            for devices in map(int, _DEVICES.value):
                name = f"{run}_{devices}"
                train_reference = functools.partial(train_at, reference, run, data_dir, devices, str(tmp / f"r_{name}"))
                expected = cached(cache / f"{name}.json", train_reference)
                got = train_at(candidate, run, data_dir, devices, str(tmp / f"c_{name}"))
                equal = expected == same_fields(got, expected)
                same &= equal
                last = got[-1]
                print(
                    f"{run}, {devices} device(s): {len(got)} evaluations, test error {last['test_error']:.4%}, "
                    f"synthetic {last['test_synthetic_error']:.4%}, train loss {last['train_loss']:.6f}; "
                    f"identical to the reference: {equal}",
                    flush=True,
                )
                for a, b in zip(expected, same_fields(got, expected)):
                    if a != b:
                        print({k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    app.run(main)
