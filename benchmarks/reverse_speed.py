"""SHADOW's train step through ``generator.reverse`` against the layer-by-layer generator it replaced.

    python -m benchmarks.reverse_speed                       # MLP and the CIFAR CNN, batch 128, one device
    python -m benchmarks.reverse_speed --nets=cnn --rounds=9 --cpu_devices=8

Both arms are the real jitted train step (``internals.make_train_step``, state
donated, SHADOW from h3). Arm "layerwise" swaps in the generator as it was
written before the transformation, layer by layer from the forward pass's
hiddens and switches (kept as the tests' oracle, ``tests/layerwise.py``);
arm "reverse" is the library's. Timings are interleaved: each round times
``--steps`` steps of one arm, then of the other, the order alternating, so
drifts of the machine hit both. Reported: each arm's median step time and
the median of the per-round ratios reverse / layerwise.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from rev_nets import data, nets, shadow, train
from rev_nets.train import internals
from tests import layerwise

_NETS = flags.DEFINE_list("nets", ["mlp", "cnn"], "mlp (784-1024x3-10) and/or cnn (32-64-128, the CIFAR default).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Real examples per step.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timing.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved rounds; medians over them.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 1, "Split a CPU host into this many JAX devices.")

NETS = {"mlp": nets.mnist_mlp, "cnn": lambda: nets.cifar_cnn((32, 64, 128))}


def layerwise_synthetic_batch(model, params, x, config, key, h=None, alpha=None):
    """``shadow.twins`` as it was: the layer-by-layer generator from the forward's hiddens."""
    gen_key, _ = jax.random.split(key)
    params = jax.lax.stop_gradient(params)
    _, hiddens = nets.forward(model, params, x)
    options = ("rho", "alpha_scale", "smooth_sigma", "use_switches")  # alpha: calibrated, as it was
    settings = {name: getattr(config.generator, name) for name in options}
    return jax.lax.stop_gradient(layerwise.generate(model, params, hiddens, config.layer, key=gen_key, **settings))


def compiled_step(net, config, mesh, per_epoch, split, order, key, patched: bool):
    """The jitted step, traced (and compiled) with the chosen generator, and a fresh state for it."""
    step = internals.make_train_step(net, config, mesh, per_epoch)
    state = internals.replicate(internals.create_state(net, config, per_epoch), mesh)
    acc = internals.replicate(internals.zero_metrics(config), mesh)
    original = shadow.twins
    shadow.twins = layerwise_synthetic_batch if patched else original
    try:
        state, acc = step(state, acc, split, order, key)
        jax.block_until_ready(acc)
    finally:
        shadow.twins = original
    return step, state, acc


def time_steps(step, state, acc, split, order, key, steps):
    start = time.perf_counter()
    for _ in range(steps):
        state, acc = step(state, acc, split, order, key)
    jax.block_until_ready(acc)
    return (time.perf_counter() - start) / steps, state, acc


def measure(name: str) -> dict[str, float]:
    net = NETS[name]()
    mesh = internals.data_mesh()
    config = train.TrainConfig(epochs=1, batch_size=_BATCH.value, shadow=shadow.ShadowConfig(layer=3))
    n = _BATCH.value * _STEPS.value
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
    split = internals.replicate(data.DeviceSplit(images, rng.integers(0, 10, n).astype(np.int32)), mesh)
    per_epoch = internals.steps_per_epoch(config, n, mesh)
    order, key = internals.make_epoch_plan(mesh, n, config.batch_size)(jax.random.key(0), 1)
    arms = {
        arm: list(compiled_step(net, config, mesh, per_epoch, split, order, key, arm == "layerwise"))
        for arm in ("layerwise", "reverse")
    }
    times = {arm: [] for arm in arms}
    for r in range(_ROUNDS.value):
        for arm in ("layerwise", "reverse") if r % 2 == 0 else ("reverse", "layerwise"):
            step, state, acc = arms[arm]
            seconds, state, acc = time_steps(step, state, acc, split, order, key, _STEPS.value)
            arms[arm][1:] = [state, acc]
            times[arm].append(seconds)
    ratios = [b / a for a, b in zip(times["layerwise"], times["reverse"])]
    return {
        "layerwise_ms": 1e3 * statistics.median(times["layerwise"]),
        "reverse_ms": 1e3 * statistics.median(times["reverse"]),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main(argv):
    del argv
    train.use_cpu_devices(_CPU_DEVICES.value)
    print(f"{jax.devices()[0].device_kind} x{jax.device_count()}, batch {_BATCH.value}, "
          f"{_ROUNDS.value} rounds of {_STEPS.value} steps, SHADOW h3")  # fmt: skip
    print("net | layerwise ms/step | reverse ms/step | reverse / layerwise (median, min-max)")
    for name in _NETS.value:
        m = measure(name)
        print(
            f"{name} | {m['layerwise_ms']:.1f} | {m['reverse_ms']:.1f} | "
            f"{m['ratio']:.3f} ({m['ratio_min']:.3f}-{m['ratio_max']:.3f})",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
