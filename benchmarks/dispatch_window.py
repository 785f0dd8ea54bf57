"""What the dispatch window costs: train-step throughput under three ways of bounding unsynced steps.

    python -m benchmarks.dispatch_window                      # default CIFAR-10 CNN, SHADOW h3 and backprop
    python -m benchmarks.dispatch_window --arms=backprop --steps=150 --repeats=5

On the default CIFAR-10 configuration (CNN 32-64-128, batch 128, the CPU
split into 8 devices) it times ``--steps`` real train steps, the median of
``--repeats`` timings, under each policy, the policies taking turns within
each repeat so that a change in the machine's speed touches all alike:

- ``window 16``: ``rev_nets.dispatch.DispatchWindow`` (what the project uses);
- ``drain every 30``: wait for the newest step every 30 steps, the fastest
  bound measured before the window (the loop with no bound aborts);
- ``sync every step``: wait for each step before dispatching the next.

It prints images/s and each policy's rate relative to ``drain every 30``.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from rev_nets import data, dispatch, nets, shadow, train
from rev_nets.train import internals

_ARMS = flags.DEFINE_list("arms", ["backprop", "shadow"], "Arms: backprop, shadow (SHADOW from h3).")
_STEPS = flags.DEFINE_integer("steps", 120, "Train steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timings per policy; the median is reported.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 8, "CPU devices (the CIFAR entry points' default split).")

BATCH = 128


def drain_every(k: int):
    """A bound that waits for the newest step's metrics every ``k`` steps."""

    def bound(i: int, acc) -> None:
        if (i + 1) % k == 0:
            jax.block_until_ready(acc)

    return bound


def window_bound():
    window = dispatch.DispatchWindow()
    return lambda i, acc: window(acc)


POLICIES = {
    "window 16": window_bound,
    "drain every 30": lambda: drain_every(30),
    "sync every step": lambda: drain_every(1),
}


def make_loop(net: nets.Net, config: train.TrainConfig):
    """``run(policy, steps) -> seconds``: the real jitted train step over a device-resident split, bounded by ``policy``."""
    mesh = internals.data_mesh()
    steps_per_epoch = 8
    n = steps_per_epoch * BATCH
    split = data.DeviceSplit(jax.random.normal(jax.random.key(1), (n, *net.input_shape)), jnp.arange(n) % 10)
    split, state, acc = internals.replicate(
        (split, internals.create_state(net, config, steps_per_epoch), internals.zero_metrics(config)), mesh
    )
    step = internals.make_train_step(net, config, mesh, steps_per_epoch)
    order, key = internals.make_epoch_plan(mesh, steps_per_epoch * BATCH, BATCH)(jax.random.key(0), 1)
    carry = [state, acc]

    def run(policy, steps: int) -> float:
        bound = POLICIES[policy]()
        start = time.perf_counter()
        for i in range(steps):
            carry[0], carry[1] = step(carry[0], carry[1], split, order, key)
            bound(i, carry[1])
        jax.block_until_ready(carry)
        return time.perf_counter() - start

    return run


def main(argv) -> None:
    del argv
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    net = nets.cifar_cnn((32, 64, 128))
    print(
        f"CIFAR-10 CNN 32-64-128, batch {BATCH}, {jax.device_count()} devices, {_STEPS.value} steps per timing, "
        f"median of {_REPEATS.value} (jax {jax.__version__})"
    )
    print("| arm | policy | img/s | relative to drain every 30 |\n|---|---|---|---|")
    for arm in _ARMS.value:
        config = train.TrainConfig(batch_size=BATCH, shadow=shadow.ShadowConfig(layer=3 if arm == "shadow" else 0))
        run = make_loop(net, config)
        run("sync every step", 5)  # Compile.
        times = {policy: [] for policy in POLICIES}
        for _ in range(_REPEATS.value):
            for policy in POLICIES:
                times[policy].append(run(policy, _STEPS.value))
        rates = {policy: _STEPS.value * BATCH / statistics.median(t) for policy, t in times.items()}
        for policy, rate in rates.items():
            print(f"| {arm} | {policy} | {rate:,.0f} | {rate / rates['drain every 30']:.3f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
