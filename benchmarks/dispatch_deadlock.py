"""Minimal reproducer, no project code: XLA:CPU aborts a loop of unsynced multi-device steps.

    python -m benchmarks.dispatch_deadlock                   # never syncs: aborts (exit 134) within a minute
    python -m benchmarks.dispatch_deadlock --sync_every=16   # waits for the step made 15 earlier: finishes

A jitted step (a matmul whose gradient-like product all-reduces over the
data axis) runs ``--steps`` times over ``--devices`` CPU devices. Without
a sync, the host queues every step at once; XLA's CPU client lets 32
computations per device be in flight, a launch past that waits on a thread
of the client's pool (max(cores, devices) threads), the all-reduce cannot
gather its devices, and after 40 s ``rendezvous.cc`` terminates the
process. ``--sync_every=K`` keeps at most K steps in flight, as
``rev_nets.dispatch.DispatchWindow`` does.
"""

from __future__ import annotations

import collections
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

_DEVICES = flags.DEFINE_integer("devices", 8, "CPU devices (jax_num_cpu_devices).")
_STEPS = flags.DEFINE_integer("steps", 300, "Jitted steps dispatched.")
_SYNC_EVERY = flags.DEFINE_integer("sync_every", 0, "Keep at most this many steps in flight (0: never sync).")


def main(argv) -> None:
    del argv
    jax.config.update("jax_num_cpu_devices", _DEVICES.value)
    mesh = jax.make_mesh((_DEVICES.value,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x = jax.device_put(jnp.ones((_DEVICES.value * 64, 512)), NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.eye(512) * 0.5, NamedSharding(mesh, P()))

    @jax.jit
    def step(w, x):
        return w - 1e-3 * (x @ w).T @ x / x.shape[0]  # The contraction over the batch is an all-reduce.

    print(f"jax {jax.__version__}, {jax.device_count()} CPU devices, {_STEPS.value} steps", flush=True)
    start, in_flight = time.perf_counter(), collections.deque()
    for _ in range(_STEPS.value):
        w = step(w, x)
        in_flight.append(w)
        while _SYNC_EVERY.value and len(in_flight) >= _SYNC_EVERY.value:
            in_flight.popleft().block_until_ready()
    w.block_until_ready()
    print(f"finished in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    app.run(main)
