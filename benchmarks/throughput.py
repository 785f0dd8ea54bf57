"""Train-step throughput: rev_nets (backprop and SHADOW) against a PyTorch reference of the same nets.

    python -m benchmarks.throughput                # every net, 1 device and the CIFAR split into 8
    python -m benchmarks.throughput --nets=cnn --batch_sizes=256 --repeats=5
    python -m benchmarks.throughput --nets=cnn_grid --device_counts=8 --torch=false

Measures images/s of the real jitted train step (``rev_nets.internals.train_step``,
data resident on the device, the state donated, at most 16 steps in flight)
as the median of ``--repeats`` timings of ``--timed_steps`` steps each, after a
warm-up. Each entry of ``--device_counts`` runs in its own subprocess (the
device count is fixed when JAX starts), one after another in this run, so
its rows can be compared: ``vs 1 device`` is a row's rate over the same
net, batch and arm on one device. Beside them: the achieved GFLOP/s
against this machine's float32 matmul peak measured in the same run (JAX,
numpy and PyTorch); the SHADOW/backprop step-time ratio beside its
arithmetic floor ``(2 (fwd + bwd) + generator) / (fwd + bwd)``, with FLOPs
counted from the layers' shapes (XLA's cost analysis misses library calls
on GPU); and the PyTorch reference (``pip install torch``; CPU build:
``pip install torch==2.13.0`` here), which trains exactly the same nets,
with SHADOW written with ``max_unpool2d`` and ``conv_transpose2d``, on its
own threads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

from rev_nets import data, dispatch, nets, shadow, train
from rev_nets.train import internals
from rev_nets import layers as L

_NETS = flags.DEFINE_list(
    "nets",
    ["mlp", "cnn", "cnn_grid"],
    "Which nets: mlp, cnn (64-128-256, impl auto), cnn_grid (32-64-128, the CIFAR entry points' default), "
    "cnn_matmul, cnn_lax (64-128-256 with that convolution).",
)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["128", "256"], "Batch sizes.")
_STEPS = flags.DEFINE_integer("timed_steps", 10, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per row; the median is reported.")
_TORCH = flags.DEFINE_boolean("torch", True, "Also time the PyTorch reference when torch is importable.")
_CPU_DEVICES = flags.DEFINE_list(  # Not --cpu_devices or --steps: the entry points' flags, imported beside this.
    "device_counts",
    ["1", "8"],
    "Device counts to measure: a CPU host split into this many JAX devices, each batch sharded over them.",
)
_WORKER = flags.DEFINE_boolean("worker", False, "Worker mode: time the JAX rows on one device count, print JSON.")


def benchmark_nets() -> dict[str, nets.Net]:
    """The default MNIST MLP and CIFAR CNN, the CNN with each convolution formulation."""
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
    }


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


def layer_flops(net: nets.Net) -> list[int]:
    """Per-image FLOPs of each linear map (hidden layers, then the head): 2 x fan-in x output units."""
    shapes = nets.layer_shapes(net)
    flops = [
        2 * L.fan_in(layer, shape) * math.prod(L.pre_pool_shape(layer, shape))
        for layer, shape in zip(net.layers, shapes)
    ]
    return [*flops, 2 * math.prod(shapes[-1]) * net.num_classes]


def shadow_flop_floor(net: nets.Net, layer: int) -> float:
    """``(2 (fwd + bwd) + generator) / (fwd + bwd)``: backward is twice forward, less layer 1's input gradient;
    the generator applies one adjoint per layer ``layer..1``, as costly as that layer's forward map."""
    flops = layer_flops(net)
    step = 3 * sum(flops) - flops[0]
    return (2 * step + sum(flops[:layer])) / step


def _fake_split(net: nets.Net, n: int) -> data.DeviceSplit:
    images = jax.random.normal(jax.random.key(1), (n, *net.input_shape))
    return data.DeviceSplit(images, jax.random.randint(jax.random.key(2), (n,), 0, net.num_classes))


def jax_images_per_s(net: nets.Net, config: train.TrainConfig, batch: int, steps: int, repeats: int) -> float:
    split = _fake_split(net, 4 * batch)
    mesh = internals.data_mesh()
    split, state, acc = internals.replicate(
        (split, internals.create_state(net, config, 4), internals.zero_metrics(config)), mesh
    )
    order, key = internals.make_epoch_plan(mesh, 4 * batch, batch)(jax.random.key(0), 1)
    step = internals.make_train_step(net, config, mesh, steps_per_epoch=4)
    carry = [state, acc]

    def run():
        window = dispatch.DispatchWindow()
        for _ in range(steps):
            carry[0], carry[1] = step(carry[0], carry[1], split, order, key)
            window(carry[1])
        jax.block_until_ready(carry)

    run()
    return steps * batch / median_seconds(run, repeats)


def torch_images_per_s(
    channels: tuple[int, ...], shadow_on: bool, batch: int, steps: int, repeats: int
) -> float | None:
    """The same step in PyTorch for the MLP (``channels`` empty) or the CNN of ``channels`` (None without torch)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.manual_seed(0)
    name = "cnn" if channels else "mlp"
    if name == "mlp":
        layers = [torch.nn.Linear(784, 1024), torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1024)]
        head, shape = torch.nn.Linear(1024, 10), (1, 28, 28)
    else:
        layers = [torch.nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip((3, *channels), channels)]
        head, shape = torch.nn.Linear(channels[-1] * 4 * 4, 10), (3, 32, 32)
    params = [p for m in [*layers, head] for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def forward(inputs):
        h, hiddens = inputs if name != "mlp" else inputs.flatten(1), []
        for layer in layers:
            h = F.relu(layer(h))
            if name != "mlp":
                h, switches = F.max_pool2d(h, 2, return_indices=True)
                hiddens.append((h, switches))
            else:
                hiddens.append((h, None))
        return head(h.flatten(1)), hiddens

    def generate(hiddens):
        with torch.no_grad():
            g = hiddens[-1][0]
            for index in range(len(layers) - 1, -1, -1):
                layer, (_, switches) = layers[index], hiddens[index]
                w = layer.weight
                fan_in = w[0].numel()
                alpha = (2.0 if index > 0 else 1.0) / (fan_in * w.pow(2).mean())
                if name == "mlp":
                    g = alpha * g @ w
                else:
                    g = F.max_unpool2d(g, switches, 2)
                    g = alpha * F.conv_transpose2d(g, w, padding=1)
                g = F.relu(g) if index > 0 else g
            return g.reshape(batch, *shape)

    def step():
        optimizer.zero_grad()
        logits, hiddens = forward(x)
        loss = F.cross_entropy(logits, y)
        if shadow_on:
            loss = (loss + F.cross_entropy(forward(generate(hiddens))[0], y)) / 2
        loss.backward()
        optimizer.step()

    def run():
        for _ in range(steps):
            step()

    run()
    return steps * batch / median_seconds(run, repeats)


def torch_channels(net: nets.Net) -> tuple[int, ...]:
    """The conv widths of a benchmark net, () for the MLP."""
    return tuple(layer.features for layer in net.layers if isinstance(layer, L.Conv))


def jax_rows(names: list[str], batches: list[int], steps: int, repeats: int) -> list[dict]:
    """Images/s of backprop and SHADOW h3 for each net and batch, on this process's devices."""
    all_nets = benchmark_nets()
    rows = []
    for name in names:
        for batch in batches:
            backprop = train.TrainConfig(batch_size=batch, shadow=shadow.ShadowConfig(layer=0))
            for arm, config in (
                ("backprop", backprop),
                ("SHADOW h3", dataclasses.replace(backprop, shadow=shadow.ShadowConfig(layer=3))),
            ):
                rate = jax_images_per_s(all_nets[name], config, batch, steps, repeats)
                rows.append({"net": name, "batch": batch, "arm": arm, "devices": jax.device_count(), "rate": rate})
    return rows


def worker_rows(devices: int) -> tuple[list[dict], float]:
    """Runs this module as a worker on ``devices`` CPU devices; returns its rows and JAX's matmul peak there."""
    flag_values = [
        f"--{name}={','.join(map(str, value)) if isinstance(value, list) else value}"
        for name, value in ((f.name, f.value) for f in (_NETS, _BATCH_SIZES, _STEPS, _REPEATS))
    ]
    command = [sys.executable, "-m", "benchmarks.throughput", "--worker", f"--device_counts={devices}", *flag_values]
    out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return out["rows"], out["jax_peak"]


def step_flops(net: nets.Net, arm: str) -> float:
    """FLOPs per image of one train step of ``arm``."""
    flops = layer_flops(net)
    backprop = 3 * sum(flops) - flops[0]
    return backprop if arm == "backprop" else shadow_flop_floor(net, 3) * backprop


def main(argv) -> None:
    del argv
    if _WORKER.value:
        jax.config.update("jax_num_cpu_devices", int(_CPU_DEVICES.value[0]))
        batches = [int(b) for b in _BATCH_SIZES.value]
        rows = jax_rows(_NETS.value, batches, _STEPS.value, _REPEATS.value)
        print(json.dumps({"rows": rows, "jax_peak": matmul_peak_gflops("jax", _REPEATS.value)}))
        return
    rows, jax_peaks = [], {}
    for devices in (int(d) for d in _CPU_DEVICES.value):
        device_rows, jax_peaks[devices] = worker_rows(devices)
        rows += device_rows
    peak = jax_peaks.get(1, next(iter(jax_peaks.values())))
    peaks = {"jax": peak, "numpy": matmul_peak_gflops("numpy", _REPEATS.value)}
    if _TORCH.value and importlib.util.find_spec("torch"):
        peaks["torch"] = matmul_peak_gflops("torch", _REPEATS.value)
    print(
        f"jax {jax.__version__}, CPU: {', '.join(f'{d} device(s)' for d in jax_peaks)}, "
        f"{_STEPS.value} steps per timing, median of {_REPEATS.value}"
    )
    print("float32 2048^2 matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()) + "\n")
    print(
        "| net | batch | arm | devices | rev_nets img/s | GFLOP/s (% of jax peak) | vs 1 device | PyTorch img/s "
        "| rev_nets / PyTorch | SHADOW/backprop time (FLOP floor) |"
    )
    print("|---" * 10 + "|")
    all_nets, torch_rates = benchmark_nets(), {}
    rate_of = {(r["net"], r["batch"], r["arm"], r["devices"]): r["rate"] for r in rows}
    for r in rows:
        net = all_nets[r["net"]]
        key = (torch_channels(net), r["batch"], r["arm"])
        if _TORCH.value and key not in torch_rates:
            torch_rates[key] = torch_images_per_s(
                key[0], r["arm"] != "backprop", r["batch"], _STEPS.value, _REPEATS.value
            )
        torch_rate = torch_rates.get(key)
        gflops = step_flops(net, r["arm"]) * r["rate"] / 1e9
        one = rate_of.get((r["net"], r["batch"], r["arm"], 1))
        versus_one = "-" if one is None else f"{r['rate'] / one:.2f}x"
        versus_torch = "-" if torch_rate is None else f"{r['rate'] / torch_rate:.2f}x"
        backprop = rate_of[(r["net"], r["batch"], "backprop", r["devices"])]
        ratio = f"{backprop / r['rate']:.2f} ({shadow_flop_floor(net, 3):.2f})" if r["arm"] != "backprop" else "-"
        print(
            f"| {r['net']} | {r['batch']} | {r['arm']} | {r['devices']} | {r['rate']:,.0f} | "
            f"{gflops:.0f} ({100 * gflops / peak:.0f}%) | {versus_one} | "
            f"{'-' if torch_rate is None else f'{torch_rate:,.0f}'} | {versus_torch} | {ratio} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
