"""Train-step throughput: rev_nets (backprop and SHADOW) against a PyTorch reference of the same nets.

    python -m benchmarks.throughput                # the default nets, 1 device and the CIFAR split into 8
    python -m benchmarks.throughput --nets=airbench --batch_sizes=512 --source_layer=3
    python -m benchmarks.throughput --nets=cnn_grid --device_counts=8 --torch_precisions=
    python -m benchmarks.throughput --nets=airbench --xla_flags=--xla_cpu_use_onednn=true

Measures images/s of the real jitted train step (``rev_nets.internals.train_step``,
data resident on the device, the state donated, at most 16 steps in flight)
as the median of ``--repeats`` timings of ``--timed_steps`` steps each, after a
warm-up. Each entry of ``--device_counts`` runs in its own subprocess (the
device count is fixed when JAX starts; ``--xla_flags`` is its XLA_FLAGS), one
after another in this run, so its rows can be compared: ``vs 1 device`` is a
row's rate over the same net, batch and arm on one device. Beside them: the
achieved GFLOP/s against this machine's float32 matmul peak measured in the
same run (JAX, numpy and PyTorch); the SHADOW/backprop step-time ratio beside
its arithmetic floor ``(2 (fwd + bwd) + generator) / (fwd + bwd)``, with FLOPs
from XLA's cost analysis of the lowered (not yet compiled) forward, which
counts every convolution and matmul on any backend; and the PyTorch
reference (``benchmarks.torch_twins``; ``pip install torch``, CPU build here),
which trains the same nets with the same loss on its own threads, in float32
(NCHW) and in bf16 autocast (channels-last), as a user of that CPU would pick.

The airbench net trains with its recipe's settings (``experiments/configs/
cifar10_airbench.py``: Nesterov, per-group rates, lookahead, label smoothing)
less augmentation, which both sides leave out of the timing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

from rev_nets import data, dispatch, models, nets, shadow, train
from rev_nets.train import internals

_NETS = flags.DEFINE_list(
    "nets",
    ["mlp", "cnn", "cnn_grid", "airbench"],
    "Which nets: mlp, cnn (64-128-256, impl auto), cnn_grid (32-64-128, the CIFAR entry points' default), "
    "cnn_matmul, cnn_lax (64-128-256 with that convolution), airbench (nnx_zoo.airbench_relu, 64/256/256, conv "
    "impl auto), airbench_bf16 (computing in bfloat16), airbench_matmul, airbench_lax (with that convolution).",
)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["128", "256"], "Batch sizes.")
_SOURCE_LAYER = flags.DEFINE_integer(  # Not --shadow_layer: the entry points' flag, imported beside this.
    "source_layer", 3, "SHADOW's source layer in the SHADOW rows."
)
_STEPS = flags.DEFINE_integer("timed_steps", 10, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per row; the median is reported.")
_TORCH_PRECISIONS = flags.DEFINE_list(
    "torch_precisions",
    ["float32", "bf16"],
    "PyTorch reference columns, when torch is importable: float32 (NCHW) and/or bf16 (autocast, channels-last).",
)
_CPU_DEVICES = flags.DEFINE_list(  # Not --cpu_devices or --steps: the entry points' flags, imported beside this.
    "device_counts",
    ["1", "8"],
    "Device counts to measure: a CPU host split into this many JAX devices, each batch sharded over them.",
)
_XLA_FLAGS = flags.DEFINE_string("xla_flags", "", "XLA_FLAGS of the JAX workers, e.g. --xla_cpu_use_onednn=true.")
_WORKER = flags.DEFINE_boolean("worker", False, "Worker mode: time the JAX rows on one device count, print JSON.")

AIRBENCH = models.ModelConfig("rev_nets.nnx_zoo:airbench_relu", {"widths": [64, 256, 256], "whiten": True})


def benchmark_models() -> dict[str, models.Model]:
    """The default MNIST MLP and CIFAR CNN, the CNN with each convolution formulation, and the airbench net."""
    cnn = nets.cifar_cnn()
    with_impl = lambda impl: dataclasses.replace(
        cnn, layers=tuple(dataclasses.replace(l, impl=impl) for l in cnn.layers)
    )
    return {
        "mlp": nets.mnist_mlp(),
        "cnn": cnn,
        "cnn_grid": nets.cifar_cnn((32, 64, 128)),
        "cnn_matmul": with_impl("matmul"),
        "cnn_lax": with_impl("lax"),
        "airbench": models.build_model(AIRBENCH),
        "airbench_bf16": airbench(compute_dtype="bfloat16"),
        "airbench_matmul": airbench(conv_impl="matmul"),
        "airbench_lax": airbench(conv_impl="lax"),
    }


def airbench(**arguments) -> models.Model:
    """The benchmark's airbench net with ``arguments`` changed."""
    return models.build_model(AIRBENCH.factory, **{**AIRBENCH.keywords, **arguments})


def torch_builder(name: str) -> str:
    """Which ``torch_twins`` builder makes the PyTorch twin of net ``name``."""
    return "mlp" if name == "mlp" else "airbench" if name.startswith("airbench") else "cnn"


def train_config(name: str, batch: int, shadow_layer: int) -> train.TrainConfig:
    """The settings net ``name`` is timed with: its recipe's for airbench (augmentation aside), else the defaults."""
    if not name.startswith("airbench"):
        return train.TrainConfig(batch_size=batch, shadow=shadow.ShadowConfig(layer=shadow_layer))
    from experiments.configs import cifar10_airbench

    recipe = cifar10_airbench.get_config().train
    return dataclasses.replace(
        recipe, batch_size=batch, augment=(), shadow=dataclasses.replace(recipe.shadow, layer=shadow_layer)
    )


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(library: str, repeats: int, n: int = 2048) -> float:
    """GFLOP/s of a float32 n x n matmul in ``library`` ("jax", jitted on one device; "numpy"; "torch")."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    if library == "jax":
        f, a = jax.jit(lambda x: x @ x), jax.device_put(a, jax.devices()[0])
        matmul = lambda: f(a).block_until_ready()
    elif library == "torch":
        import torch

        a = torch.from_numpy(a)
        matmul = lambda: a @ a
    else:
        matmul = lambda: a @ a
    matmul()
    return 2 * n**3 / median_seconds(matmul, repeats) / 1e9


def forward_flops(model: models.Model, layer: int | None = None, batch: int = 8) -> float:
    """Per-image FLOPs of ``model``'s forward pass (to hidden layer ``layer`` if given), from XLA's cost
    analysis of the lowered computation: before compilation, so library calls are still counted ops."""
    params = model.init(jax.random.key(0))
    x = jax.numpy.zeros((batch, *model.input_shape))
    fn = (lambda p, x: model.forward(p, x).logits) if layer is None else (lambda p, x: model.features(p, x, layer))
    return float(jax.jit(fn).lower(params, x).cost_analysis()["flops"]) / batch


def shadow_flop_floor(model: models.Model, layer: int) -> float:
    """``(2 (fwd + bwd) + generator) / (fwd + bwd)``, the backward pass counted as twice the forward (layer 1's
    unneeded input gradient included) and the generator as the forward to ``layer``: one adjoint per map."""
    step = 3 * forward_flops(model)
    return (2 * step + forward_flops(model, layer)) / step


def _fake_split(model: models.Model, n: int) -> data.DeviceSplit:
    images = jax.random.normal(jax.random.key(1), (n, *model.input_shape))
    return data.DeviceSplit(images, jax.random.randint(jax.random.key(2), (n,), 0, model.num_classes))


def made_step(model: models.Model, config: train.TrainConfig, batch: int) -> tuple:
    """The real jitted train step of ``model`` under ``config`` and its first arguments, on made data on the mesh."""
    split = _fake_split(model, 4 * batch)
    mesh = internals.data_mesh()
    state = internals.create_state(model, config, 4, split.images)
    split, state, acc = internals.replicate((split, state, internals.zero_metrics(config)), mesh)
    order, key = internals.make_epoch_plan(mesh, 4 * batch, batch)(jax.random.key(0), 1)
    return internals.make_train_step(model, config, mesh, steps_per_epoch=4), (state, acc, split, order, key)


def step_runner(step, arguments: tuple):
    """A function running ``steps`` train steps from ``arguments`` (the state donated, at most 16 in flight)."""
    carry = list(arguments[:2])

    def run(steps: int) -> None:
        window = dispatch.DispatchWindow()
        for _ in range(steps):
            carry[0], carry[1] = step(carry[0], carry[1], *arguments[2:])
            window(carry[1])
        jax.block_until_ready(carry)

    return run


def jax_images_per_s(model: models.Model, config: train.TrainConfig, batch: int, steps: int, repeats: int) -> float:
    run = step_runner(*made_step(model, config, batch))
    run(steps)
    return steps * batch / median_seconds(lambda: run(steps), repeats)


def torch_images_per_s(step, batch: int) -> float:
    """Images/s of a PyTorch train step, timed as the JAX rows are (after one warm-up run)."""

    def run():
        for _ in range(_STEPS.value):
            step()

    run()
    return _STEPS.value * batch / median_seconds(run, _REPEATS.value)


def arms(shadow_layer: int) -> tuple[tuple[str, int], ...]:
    return (("backprop", 0), (f"SHADOW h{shadow_layer}", shadow_layer))


def jax_rows(names: list[str], batches: list[int], shadow_layer: int, steps: int, repeats: int) -> list[dict]:
    """Images/s of backprop and SHADOW for each net and batch, on this process's devices."""
    all_models = benchmark_models()
    rows = []
    for name in names:
        for batch in batches:
            for arm, layer in arms(shadow_layer):
                config = train_config(name, batch, layer)
                rate = jax_images_per_s(all_models[name], config, batch, steps, repeats)
                rows.append({"net": name, "batch": batch, "arm": arm, "devices": jax.device_count(), "rate": rate})
    return rows


def worker_rows(devices: int) -> tuple[list[dict], float]:
    """Runs this module as a worker on ``devices`` CPU devices; returns its rows and JAX's matmul peak there."""
    flag_values = [
        f"--{name}={','.join(map(str, value)) if isinstance(value, list) else value}"
        for name, value in ((f.name, f.value) for f in (_NETS, _BATCH_SIZES, _SOURCE_LAYER, _STEPS, _REPEATS))
    ]
    command = [sys.executable, "-m", "benchmarks.throughput", "--worker", f"--device_counts={devices}", *flag_values]
    environment = {**os.environ, "XLA_FLAGS": _XLA_FLAGS.value} if _XLA_FLAGS.value else None
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    result = json.loads(out.stdout.splitlines()[-1])
    return result["rows"], result["jax_peak"]


def main(argv) -> None:
    del argv
    if _WORKER.value:
        jax.config.update("jax_num_cpu_devices", int(_CPU_DEVICES.value[0]))
        batches = [int(b) for b in _BATCH_SIZES.value]
        rows = jax_rows(_NETS.value, batches, _SOURCE_LAYER.value, _STEPS.value, _REPEATS.value)
        print(json.dumps({"rows": rows, "jax_peak": matmul_peak_gflops("jax", _REPEATS.value)}))
        return
    rows, jax_peaks = [], {}
    for devices in (int(d) for d in _CPU_DEVICES.value):
        device_rows, jax_peaks[devices] = worker_rows(devices)
        rows += device_rows
    peak = jax_peaks.get(1, next(iter(jax_peaks.values())))
    peaks = {"jax": peak, "numpy": matmul_peak_gflops("numpy", _REPEATS.value)}
    precisions = _TORCH_PRECISIONS.value if importlib.util.find_spec("torch") else []
    if precisions:
        peaks["torch"] = matmul_peak_gflops("torch", _REPEATS.value)
    print(
        f"jax {jax.__version__}, CPU: {', '.join(f'{d} device(s)' for d in jax_peaks)}, "
        f"XLA_FLAGS={_XLA_FLAGS.value or '(none)'}, {_STEPS.value} steps per timing, median of {_REPEATS.value}"
    )
    print("float32 2048^2 matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()) + "\n")
    torch_columns = "".join(f" PyTorch {p} img/s | rev_nets / PyTorch {p} |" for p in precisions)
    print(
        "| net | batch | arm | devices | rev_nets img/s | GFLOP/s (% of jax peak) | vs 1 device |"
        f"{torch_columns} SHADOW/backprop time (FLOP floor) |"
    )
    print("|---" * (8 + 2 * len(precisions)) + "|")
    print_rows(rows, precisions, peak)


def print_rows(rows: list[dict], precisions: list[str], peak: float) -> None:
    """One table row per JAX row, with its PyTorch twin's rates (timed once per net, batch, arm and precision)."""
    if precisions:
        from benchmarks import torch_twins  # PyTorch only where its columns are asked for and it is installed.
    all_models, torch_rates = benchmark_models(), {}
    rate_of = {(r["net"], r["batch"], r["arm"], r["devices"]): r["rate"] for r in rows}
    layer_of = dict(arms(_SOURCE_LAYER.value))
    floors = {}
    for r in rows:
        model, layer = all_models[r["net"]], layer_of[r["arm"]]
        if r["net"] not in floors:
            floors[r["net"]] = (3 * forward_flops(model), shadow_flop_floor(model, _SOURCE_LAYER.value))
        step_flops = floors[r["net"]][0] * (1 if layer == 0 else floors[r["net"]][1])
        cells = []
        for precision in precisions:
            key = (r["net"], r["batch"], r["arm"], precision)
            if key not in torch_rates:
                smoothing = train_config(r["net"], r["batch"], layer).label_smoothing
                torch_rates[key] = torch_images_per_s(
                    torch_twins.train_step(torch_builder(r["net"]), model, layer, r["batch"], precision, smoothing),
                    r["batch"],
                )
            cells.append(f"{torch_rates[key]:,.0f} | {r['rate'] / torch_rates[key]:.2f}x")
        gflops = step_flops * r["rate"] / 1e9
        one = rate_of.get((r["net"], r["batch"], r["arm"], 1))
        versus_one = "-" if one is None else f"{r['rate'] / one:.2f}x"
        backprop = rate_of[(r["net"], r["batch"], "backprop", r["devices"])]
        ratio = f"{backprop / r['rate']:.2f} ({floors[r['net']][1]:.2f})" if layer else "-"
        print(
            f"| {r['net']} | {r['batch']} | {r['arm']} | {r['devices']} | {r['rate']:,.0f} | "
            f"{gflops:.0f} ({100 * gflops / peak:.0f}%) | {versus_one} | "
            + "".join(f"{cell} | " for cell in cells)
            + f"{ratio} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
