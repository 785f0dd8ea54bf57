"""Runs of the CIFAR-10 entry point as a user starts them (used by ``stress`` and ``kill_resume``; flag-free).

Both benchmarks start ``python -m experiments.cifar10`` with its defaults
as a subprocess, on the given data folder or on made data of CIFAR-10's
size, and read its progress lines and ``metrics.jsonl``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROGRESS = re.compile(r"^epoch (\d+)/\d+ step (\d+)/(\d+) ")  # The fit loop's progress lines.


def command(data_dir: str, workdir: str, epochs: int) -> list[str]:
    """The entry point with its defaults, unbuffered, for ``epochs`` epochs in ``workdir``."""
    return [
        sys.executable,
        "-u",
        "-m",
        "experiments.cifar10",
        f"--data_dir={data_dir}",
        f"--workdir={workdir}",
        f"--epochs={epochs}",
    ]


def data_dir_or_made(data_dir: str | None, scratch: str) -> str:
    """``data_dir``, or a folder under ``scratch`` with made CIFAR-10 of the real size."""
    if data_dir:
        return data_dir
    from tests.made_data import write_cifar10

    return str(write_cifar10(Path(scratch) / "data"))


def learning_metrics(workdir: str) -> list[dict]:
    """The run's metric lines without their timing fields."""
    from rev_nets import train

    lines = train.read_metrics(workdir)
    return [{k: v for k, v in line.items() if not k.endswith("_s") and k != "images_per_s"} for line in lines]
