"""Counts multi-device dispatches that the host has not yet waited for, without timing anything.

``count_dispatches()`` wraps every way code dispatches work (calls of
functions jitted inside the block, eager primitives) and every way it
waits (``block_until_ready``, ``device_get``, reading an array's value).
A dispatch counts when its outputs span at least ``min_devices`` devices;
waiting for dispatch ``j`` marks it and every earlier one done (a stream
of dispatches completes in order on XLA:CPU, as the ``DispatchWindow``
waits for them: oldest first). ``peak`` is the largest number of
dispatches in flight just after one was made, the number XLA's
32-per-device budget limits.

Run as ``python -m tests.dispatch_ledger WORKDIR [DEPTH]`` (8 CPU devices),
it prints the peaks of ``train.fit`` and ``internals.evaluate`` as JSON, with
the windows' depth set to DEPTH when given: the control that shows the
count follows the window (an unbounded loop would abort the process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys

import jax
from jax._src import array, dispatch


@dataclasses.dataclass
class Ledger:
    min_devices: int = 2
    dispatched: int = 0
    done_through: int = 0  # Dispatches before this index are known to be done.
    peak: int = 0
    index_of: dict = dataclasses.field(default_factory=dict)  # id(output leaf) -> dispatch index.
    keep: list = dataclasses.field(default_factory=list)  # Keeps the ids above from being reused.

    def record(self, outputs):
        leaves = [x for x in jax.tree.leaves(outputs) if isinstance(x, jax.Array)]
        if any(len(x.sharding.device_set) >= self.min_devices for x in leaves):
            for x in leaves:
                self.index_of[id(x)] = self.dispatched
            self.keep.append(leaves)
            self.dispatched += 1
            self.peak = max(self.peak, self.dispatched - self.done_through)
        return outputs

    def waited(self, tree) -> None:
        for x in jax.tree.leaves(tree):
            if id(x) in self.index_of:
                self.done_through = max(self.done_through, self.index_of[id(x)] + 1)


@contextlib.contextmanager
def count_dispatches(min_devices: int = 2):
    """Yields a ``Ledger`` that counts the dispatches on ``min_devices`` or more devices made inside the block."""
    ledger = Ledger(min_devices)

    def counted(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            return ledger.record(fn(*args, **kwargs))

        return call

    real_jit, real_primitive = jax.jit, dispatch.xla_primitive_callable
    real_block, real_get = jax.block_until_ready, jax.device_get
    real_method, real_value = array.ArrayImpl.block_until_ready, array.ArrayImpl._value

    def block_until_ready(tree):
        ledger.waited(tree)
        return real_block(tree)

    def device_get(tree):
        ledger.waited(tree)
        return real_get(tree)

    def method(self):
        ledger.waited(self)
        return real_method(self)

    def value(self):
        ledger.waited(self)
        return real_value.fget(self)

    jax.jit = lambda *args, **kwargs: counted(real_jit(*args, **kwargs))
    dispatch.xla_primitive_callable = lambda *args, **kwargs: counted(real_primitive(*args, **kwargs))
    jax.block_until_ready, jax.device_get = block_until_ready, device_get
    array.ArrayImpl.block_until_ready, array.ArrayImpl._value = method, property(value)
    try:
        yield ledger
    finally:
        jax.jit, dispatch.xla_primitive_callable = real_jit, real_primitive
        jax.block_until_ready, jax.device_get = real_block, real_get
        array.ArrayImpl.block_until_ready, array.ArrayImpl._value = real_method, real_value


def peaks(workdir: str) -> dict[str, int]:
    """Peaks of a 2-epoch fit (60 steps an epoch, the default ``log_every`` of 50) and of a 40-batch evaluation."""
    import numpy as np

    from rev_nets import data, nets, shadow, train
    from rev_nets.train import internals

    net = nets.mnist_mlp(width=16)
    rng = np.random.default_rng(0)
    make = lambda n: data.DeviceSplit(
        rng.standard_normal((n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)
    )
    config = train.TrainConfig(epochs=2, batch_size=16, eval_batch_size=16, shadow=shadow.ShadowConfig(layer=2))
    train_split, evals = make(60 * 16), {"test": make(40 * 16)}
    with count_dispatches() as ledger:
        state, _ = train.fit(net, config, train_split, evals, workdir, figures=True)
    fit_peak = ledger.peak
    mesh = internals.data_mesh()
    split = internals.replicate(evals["test"], mesh)
    with count_dispatches() as ledger:
        eval_fn = jax.jit(
            functools.partial(
                internals.eval_step, net, config.synthetic_config(net), batch_sharding=internals.batch_sharding(mesh)
            )
        )
        internals.evaluate(eval_fn, state.params, split, batch_size=16, multiple=mesh.size)
    return {"fit": fit_peak, "evaluate": ledger.peak, "devices": jax.device_count()}


if __name__ == "__main__":
    jax.config.update("jax_num_cpu_devices", 8)
    if len(sys.argv) > 2:
        from rev_nets import dispatch as window_module

        window_module.DEFAULT_DEPTH = int(sys.argv[2])
    print(json.dumps(peaks(sys.argv[1])))
