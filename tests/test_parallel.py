"""Data parallelism: 1 device, 8 forced host devices and 2 processes give the same training steps."""

import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks import parallel_runs
from rev_nets import models

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5


def _train(out, devices: int, steps: int = STEPS, batch_norm: bool = False) -> np.lib.npyio.NpzFile:
    subprocess.run(
        parallel_runs.worker_command(str(out), steps, batch_norm=batch_norm),
        env=parallel_runs.worker_env(devices),
        cwd=ROOT,
        check=True,
        timeout=180,
        capture_output=True,
    )
    return np.load(out)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("single") / "run.npz", devices=1)


def _assert_same_steps(reference, other, devices, steps=STEPS):
    assert int(other["devices"]) == devices
    assert len(other["losses"]) == steps
    np.testing.assert_allclose(other["losses"], reference["losses"], rtol=1e-5)
    for name in reference.files:
        if name.startswith("param_"):
            np.testing.assert_allclose(other[name], reference[name], rtol=1e-5, atol=1e-6)


def test_eight_host_devices_match_one_device(single_device, tmp_path):
    _assert_same_steps(single_device, _train(tmp_path / "run.npz", devices=8), devices=8)


def test_batchnorm_statistics_over_eight_devices_are_the_global_batch_statistics(tmp_path):
    """A BatchNorm net's SHADOW steps on augmented images, on 8 devices, equal 1 device's, running statistics
    included: each device's share is normalised by the whole batch's statistics (jit all-reduces the mean over the
    sharded batch), and each image draws the same flip and shift."""
    one = _train(tmp_path / "one.npz", devices=1, steps=3, batch_norm=True)
    eight = _train(tmp_path / "eight.npz", devices=8, steps=3, batch_norm=True)
    model = models.build_model(
        "rev_nets.nnx_zoo:ResidualCNN", channels=[4, 8, 8], input_shape=[8, 8, 3], batch_norm=True
    )
    carried = jax.tree.leaves(model.init(jax.random.key(0)))
    assert sum(name.startswith("param_") for name in one.files) == len(carried)  # the statistics are compared too
    _assert_same_steps(one, eight, devices=8, steps=3)


def test_two_processes_match_one_process(single_device, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run.npz"
    parallel_runs.run_processes(str(out), STEPS, num_processes=2, timeout=180)
    _assert_same_steps(single_device, np.load(out), devices=2)


def test_drift_is_relative_to_the_reference(tmp_path):
    np.savez(tmp_path / "reference.npz", losses=[2.0, 1.0, 0.5], param_0=[3.0, 4.0])
    np.savez(tmp_path / "other.npz", losses=[2.0, 1.1, 0.5], param_0=[3.0, 4.5])
    reference, other = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "other.npz")
    result = parallel_runs.drift(reference, other, at_steps=[1, 3])
    assert result["loss rel. diff, steps 1-1"] == 0.0
    assert result["loss rel. diff, steps 1-3"] == pytest.approx(0.1)  # the largest so far, not the last
    assert result["params rel. distance"] == pytest.approx(0.1)
