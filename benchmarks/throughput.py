"""Train-step throughput: rev_nets (backprop and SHADOW) against a PyTorch reference of the same nets.

    python -m benchmarks.throughput                # everything (PyTorch rows when torch is installed)
    python -m benchmarks.throughput --nets=cnn --batch_sizes=256 --repeats=5
    python -m benchmarks.throughput --nets=cnn --cpu_devices=8  # the CNN over 8 CPU devices

Measures images/s of the real jitted train step (``rev_nets.train.train_step``,
data resident on the device, buffers donated) as the median of ``--repeats``
timings of ``--steps`` steps each, after a warm-up; the achieved GFLOP/s
against this machine's matmul peak measured in the same run; and the
SHADOW/backprop step-time ratio beside its arithmetic floor
``(2 (fwd + bwd) + generator) / (fwd + bwd)``, with FLOPs counted from the
layers' shapes (XLA's cost analysis misses library calls on GPU). The PyTorch reference (``pip install torch``; CPU build:
``pip install torch==2.13.0`` here) trains exactly the same nets, with SHADOW
written with ``max_unpool2d`` and ``conv_transpose2d``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from rev_nets import data, nets, shadow, train
from rev_nets import layers as L

_NETS = flags.DEFINE_list(
    "nets", ["mlp", "cnn_matmul", "cnn_lax"], "Which nets: mlp, cnn (impl auto), cnn_matmul, cnn_lax (lax.conv)."
)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["128", "256"], "Batch sizes.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per row; the median is reported.")
_TORCH = flags.DEFINE_boolean("torch", True, "Also time the PyTorch reference when torch is importable.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 1, "Split a CPU host into this many JAX devices, each batch sharded over them (as --cpu_devices)."
)


def benchmark_nets() -> dict[str, nets.Net]:
    """The default MNIST MLP and CIFAR CNN, the CNN with each convolution formulation."""
    cnn = nets.cifar_cnn()
    with_impl = lambda impl: dataclasses.replace(
        cnn, layers=tuple(dataclasses.replace(l, impl=impl) for l in cnn.layers)
    )
    return {"mlp": nets.mnist_mlp(), "cnn": cnn, "cnn_matmul": with_impl("matmul"), "cnn_lax": with_impl("lax")}


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(repeats: int, n: int = 2048) -> dict[str, float]:
    """GFLOP/s of a float32 n x n matmul: jitted JAX and numpy."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    jax_s = median_seconds(lambda: f(a).block_until_ready(), repeats)
    an = np.asarray(a)
    np_s = median_seconds(lambda: an @ an, repeats)
    return {"jax": 2 * n**3 / jax_s / 1e9, "numpy": 2 * n**3 / np_s / 1e9}


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
    mesh = train.data_mesh()
    split, state, acc = train.replicate((split, train.create_state(net, config, 4), train.zero_metrics(config)), mesh)
    step = train.make_train_step(net, config, mesh, steps_per_epoch=4)
    order = jnp.arange(4 * batch).reshape(4, batch)
    key = jax.random.key(0)
    carry = [state, acc]

    def run():
        for _ in range(steps):
            carry[0], carry[1] = step(carry[0], carry[1], split, order, key)
        jax.block_until_ready(carry)

    run()
    return steps * batch / median_seconds(run, repeats)


def torch_images_per_s(name: str, shadow_on: bool, batch: int, steps: int, repeats: int) -> float | None:
    """The same net and step in PyTorch (None when torch is not installed)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.manual_seed(0)
    if name == "mlp":
        layers = [torch.nn.Linear(784, 1024), torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1024)]
        head, shape = torch.nn.Linear(1024, 10), (1, 28, 28)
    else:
        layers = [
            torch.nn.Conv2d(3, 64, 3, padding=1),
            torch.nn.Conv2d(64, 128, 3, padding=1),
            torch.nn.Conv2d(128, 256, 3, padding=1),
        ]
        head, shape = torch.nn.Linear(4096, 10), (3, 32, 32)
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


def main(argv) -> None:
    del argv
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    peak = matmul_peak_gflops(_REPEATS.value)
    print(f"devices: {jax.devices()}")
    print(f"matmul peak (float32 2048^2): jax {peak['jax']:.0f} GFLOP/s, numpy {peak['numpy']:.0f} GFLOP/s\n")
    header = "| net | batch | arm | rev_nets img/s | GFLOP/s (% of jax peak) | PyTorch img/s | rev_nets / PyTorch | SHADOW/backprop time | FLOP floor |"
    print(header + "\n" + "|---" * 9 + "|")
    all_nets = benchmark_nets()
    torch_rates = {}
    for name in _NETS.value:
        net = all_nets[name]
        for batch in (int(b) for b in _BATCH_SIZES.value):
            backprop = train.TrainConfig(batch_size=batch, shadow=shadow.ShadowConfig(layer=0))
            shadowed = dataclasses.replace(backprop, shadow=shadow.ShadowConfig(layer=3))
            flops = layer_flops(net)
            step_flops = {"backprop": 3 * sum(flops) - flops[0]}
            floor = shadow_flop_floor(net, 3)
            step_flops["SHADOW h3"] = floor * step_flops["backprop"]
            rates = {}
            for arm, config in (("backprop", backprop), ("SHADOW h3", shadowed)):
                rate = jax_images_per_s(net, config, batch, _STEPS.value, _REPEATS.value)
                rates[arm] = rate
                gflops = step_flops[arm] * rate / 1e9
                torch_key = ("mlp" if name == "mlp" else "cnn", batch, arm)
                if _TORCH.value and torch_key not in torch_rates:
                    torch_rates[torch_key] = torch_images_per_s(
                        torch_key[0], arm != "backprop", batch, _STEPS.value, _REPEATS.value
                    )
                torch_rate = torch_rates.get(torch_key)
                ratio = rates["backprop"] / rate if arm != "backprop" else None
                print(
                    f"| {name} | {batch} | {arm} | {rate:,.0f} | {gflops:.0f} ({100 * gflops / peak['jax']:.0f}%) | "
                    f"{'-' if torch_rate is None else f'{torch_rate:,.0f}'} | "
                    f"{'-' if torch_rate is None else f'{rate / torch_rate:.2f}x'} | "
                    f"{'-' if ratio is None else f'{ratio:.2f}'} | {'-' if ratio is None else f'{floor:.2f}'} |",
                    flush=True,
                )


if __name__ == "__main__":
    app.run(main)
