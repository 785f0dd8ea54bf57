"""The dispatch window: how far loops over jitted work run ahead of the devices, counted, not timed."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from rev_nets import dispatch
from tests import dispatch_ledger

ROOT = Path(__file__).resolve().parents[1]


def _peaks(workdir, depth=None) -> dict:
    command = [sys.executable, "-m", "tests.dispatch_ledger", str(workdir), *([str(depth)] if depth else [])]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fit_and_evaluate_keep_at_most_the_window_of_multi_device_dispatches_unsynced(tmp_path):
    # 60 steps an epoch with the default log_every of 50 and 40 eval batches: without the window, 50 and 40.
    peaks = _peaks(tmp_path / "run")
    assert peaks == {"fit": dispatch.DEFAULT_DEPTH, "evaluate": dispatch.DEFAULT_DEPTH, "devices": 8}


def test_the_count_follows_the_window_depth(tmp_path):
    # The control: a deeper window (still under XLA's 32, which would abort the process) shows in the count.
    assert _peaks(tmp_path / "run", depth=24) == {"fit": 24, "evaluate": 24, "devices": 8}


def test_the_ledger_counts_eager_and_jitted_dispatches_until_they_are_waited_for():
    x = jnp.ones(3)
    with dispatch_ledger.count_dispatches(min_devices=1) as ledger:
        add = jax.jit(lambda a: a + 1)  # jitted inside the block, as fit and evaluate's callers do
        outs = [add(x) for _ in range(4)]
        eager = jax.lax.neg(x)  # one eager primitive
        assert (ledger.dispatched, ledger.peak) == (5, 5)
        outs[2].block_until_ready()
        assert ledger.done_through == 3
        jax.device_get(eager)
        assert ledger.done_through == 5
        add(eager)
        assert (ledger.dispatched, ledger.done_through, ledger.peak) == (6, 5, 5)
    with dispatch_ledger.count_dispatches() as ledger:  # the default counts multi-device dispatches only
        add(x)
        assert ledger.dispatched == 0


@pytest.mark.parametrize("depth", [1, 3, 16])
def test_the_window_waits_for_the_oldest_so_that_at_most_depth_are_pending(depth, monkeypatch):
    waited = []
    real_wait = dispatch._wait
    monkeypatch.setattr(dispatch, "_wait", lambda outputs, d: waited.append(int(outputs)) or real_wait(outputs, d))
    window = dispatch.DispatchWindow(depth)
    step = jax.jit(lambda i: i + 1)
    value = jnp.zeros((), jnp.int32)
    for i in range(40):
        value = window(step(value))
        assert len(window) == min(i + 1, depth - 1)
    assert waited == list(range(1, 40 - depth + 2))
    window.wait()
    assert len(window) == 0 and waited == list(range(1, 41))


def test_a_donated_output_cannot_be_waited_for_and_says_what_to_record():
    step = jax.jit(lambda x: x + 1, donate_argnums=0)
    window = dispatch.DispatchWindow(2)
    x = window(step(jnp.zeros(4)))
    with pytest.raises(ValueError, match="donated to a later call"):
        window(step(x))


def test_a_window_needs_a_positive_depth():
    with pytest.raises(ValueError, match="depth must be at least 1, got 0"):
        dispatch.DispatchWindow(0)
