"""Runs an entry point as a user does: ``python -m experiments.<module>`` in a subprocess, output captured."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_entry_point(module: str, *flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``experiments.<module>`` with ``flags`` from the repository root, unbuffered; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", *flags],
        cwd=ROOT,
        check=False,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
