"""Data parallelism: 1 device, 8 forced host devices and 2 processes give the same training steps."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("parallel_worker.py")


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run.npz"
    subprocess.run([sys.executable, str(WORKER), str(out)], env=_env(1), check=True, timeout=180, capture_output=True)
    return np.load(out)


def _assert_same_steps(reference, other, devices):
    assert int(other["devices"]) == devices
    np.testing.assert_allclose(other["losses"], reference["losses"], rtol=1e-5)
    for name in reference.files:
        if name.startswith("param_"):
            np.testing.assert_allclose(other[name], reference[name], rtol=1e-5, atol=1e-6)


def test_eight_host_devices_match_one_device(single_device, tmp_path):
    out = tmp_path / "run.npz"
    subprocess.run([sys.executable, str(WORKER), str(out)], env=_env(8), check=True, timeout=180, capture_output=True)
    _assert_same_steps(single_device, np.load(out), devices=8)


def test_two_processes_match_one_process(single_device, tmp_path):
    out, port = tmp_path / "run.npz", _free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), str(i), "2", str(port)],
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for worker in workers:
        try:
            output, _ = worker.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            pytest.fail("the two-process run did not finish in 180 s")
        assert worker.returncode == 0, output.decode()[-2000:]
    _assert_same_steps(single_device, np.load(out), devices=2)
