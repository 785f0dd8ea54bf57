"""A bound on how far the host runs ahead of the devices: the one rule every loop over jitted work follows.

JAX dispatches asynchronously: a loop of jitted calls returns at once and
the devices work through a queue. XLA's CPU client runs each execution's
launch as a task on a pool of max(cores, devices) threads and lets at most
32 computations per device be in flight; a launch task that waits (for its
inputs, or for that budget) keeps its thread. With dozens of steps queued,
every pool thread holds a waiting launch, a collective (the gradient
all-reduce) cannot gather all its devices, and after 40 s XLA aborts the
process (``rendezvous.cc``: "Termination timeout for all reduce").
``benchmarks/dispatch_deadlock.py`` reproduces it without project code.

``DispatchWindow`` waits for the output of the dispatch made ``depth - 1``
calls earlier before it lets the loop go on, so the queue never holds more
than ``depth`` computations: half of XLA's limit, and enough to hide the
host's dispatch cost. Syncing every step instead leaves the devices idle
while the host dispatches: about 1% for the CIFAR CNN's 70-180 ms steps
on a CPU, more where steps are short (a GPU, a TPU).
"""

from __future__ import annotations

import collections
from typing import TypeVar

import jax

from rev_nets.errors import InputError

DEFAULT_DEPTH = 16  # Half of XLA:CPU's 32 computations in flight per device.

T = TypeVar("T")


class DispatchWindow:
    """Keeps at most ``depth`` dispatched computations unsynced: each new dispatch finds at most ``depth - 1``.

    Call it on each dispatch's output, in dispatch order::

        window = DispatchWindow()
        for batch in batches:
            state, metrics = step(state, batch)
            window(metrics)
        window.wait()

    The recorded output must stay alive: pass one that is not donated to a
    later call (the metrics, not a donated state). ``depth`` defaults to
    ``DEFAULT_DEPTH``, read when the window is made.
    """

    def __init__(self, depth: int | None = None):
        depth = DEFAULT_DEPTH if depth is None else depth
        if depth < 1:
            raise InputError(f"depth must be at least 1, got {depth}.")
        self.depth = depth
        self._pending: collections.deque = collections.deque()

    def __call__(self, outputs: T) -> T:
        """Records one dispatch's ``outputs`` and waits for the oldest until ``depth - 1`` remain. Returns ``outputs``."""
        self._pending.append(outputs)
        while len(self._pending) >= self.depth:
            _wait(self._pending.popleft(), self.depth)
        return outputs

    def wait(self) -> None:
        """Waits for every recorded dispatch."""
        while self._pending:
            _wait(self._pending.popleft(), self.depth)

    def __len__(self) -> int:
        """Recorded dispatches not yet waited for."""
        return len(self._pending)


def _wait(outputs, depth: int) -> None:
    leaves = jax.tree.leaves(outputs)
    if any(isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in leaves):
        raise InputError(
            f"an output recorded {depth - 1} dispatches ago was donated to a later call, so it cannot be waited for; "
            "record an output that is not donated (the step's metrics rather than its donated state)."
        )
    jax.block_until_ready(leaves)
