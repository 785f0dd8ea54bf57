"""Data-parallel training runs to compare across device counts (used by ``parallel_drift`` and the tests).

A worker trains a small max-pooled CNN with SHADOW (h3) on made data over
every device of every process (or, with ``batch_norm``, the zoo's residual
CNN with BatchNorm, whose statistics are over the global batch, on
augmented images) and writes
its per-step losses and final parameters, statistics included; ``drift``
compares two such runs. Flag-free, so tests can import
it beside other benchmark modules.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import jax
import numpy as np

EXAMPLES, BATCH = 256, 16


def train_steps(out: str, steps: int, batch_norm: bool = False) -> None:
    """``steps`` SHADOW steps over every device of every process; process 0 writes losses and params."""
    from rev_nets import data, dispatch, models, nets, shadow, train
    from rev_nets.train import internals

    if batch_norm:  # A residual sum before a ReLU: the calibrated alpha's guarantee fails, so the formula.
        net = models.build_model(
            "rev_nets.nnx_zoo:ResidualCNN", channels=[4, 8, 8], input_shape=[8, 8, 3], batch_norm=True
        )
        generator, augment = shadow.GeneratorConfig(alpha="formula"), ("flip", "translate")
    else:
        net, generator, augment = nets.cifar_cnn((4, 8, 8), input_shape=(8, 8, 3)), shadow.GeneratorConfig(), ()
    config = train.TrainConfig(
        batch_size=BATCH,
        learning_rate=0.05,
        schedule="constant",
        shadow=shadow.ShadowConfig(layer=3, generator=generator),
        augment=augment,
    )
    rng = np.random.default_rng(0)
    split = data.DeviceSplit(
        rng.standard_normal((EXAMPLES, 8, 8, 3)).astype(np.float32),
        rng.integers(0, 10, EXAMPLES).astype(np.int32),
    )
    batches = EXAMPLES // BATCH
    mesh = internals.data_mesh()
    split, state, acc = internals.replicate(
        (split, internals.create_state(net, config, batches), internals.zero_metrics(config)), mesh
    )
    step = internals.make_train_step(net, config, mesh, batches)
    order = np.random.default_rng(1).permutation(EXAMPLES).reshape(batches, BATCH).astype(np.int32)
    key = jax.random.key(2)
    window, loss_sums = dispatch.DispatchWindow(), []
    for _ in range(steps):
        state, acc = step(state, acc, split, order, key)
        loss_sums.append(window(acc)["loss"])
    loss_sums = [float(np.asarray(s.addressable_data(0))) for s in loss_sums]  # This process's copy of each sum.
    losses = np.diff(loss_sums, prepend=0.0)
    params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state.params)
    if jax.process_index() == 0:
        leaves = {f"param_{i}": leaf for i, leaf in enumerate(jax.tree.leaves(params))}
        np.savez(out, losses=losses, devices=jax.device_count(), **leaves)


def worker_command(
    out: str, steps: int, process: tuple[int, int, int] | None = None, batch_norm: bool = False
) -> list[str]:
    """The command line of one worker run (run it from the repository root)."""
    command = [sys.executable, "-m", "benchmarks.parallel_drift", f"--worker_out={out}", f"--steps={steps}"]
    command += ["--worker_batch_norm"] if batch_norm else []
    return command + ([f"--process={','.join(map(str, process))}"] if process else [])


def worker_env(devices: int) -> dict[str, str]:
    """The environment with ``devices`` forced host devices (1: XLA_FLAGS removed)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(out: str, steps: int, num_processes: int, timeout: float) -> None:
    """Runs ``num_processes`` workers joined by ``jax.distributed``; raises with the log of one that fails."""
    port = free_port()
    workers = [
        subprocess.Popen(
            worker_command(out, steps, (i, num_processes, port)),
            env=worker_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(num_processes)
    ]
    try:
        logs = [w.communicate(timeout=timeout)[0].decode() for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, log in zip(workers, logs):
        if w.returncode:
            raise RuntimeError(f"a worker of the {num_processes}-process run failed:\n{log[-2000:]}")


def drift(reference, other, at_steps) -> dict[str, float]:
    """Largest relative loss difference up to each of ``at_steps`` (1-based), and the final params' relative distance."""
    rel = np.maximum.accumulate(np.abs(other["losses"] - reference["losses"]) / np.abs(reference["losses"]))
    names = [n for n in reference.files if n.startswith("param_")]
    distance = np.sqrt(sum(np.sum((other[n] - reference[n]) ** 2) for n in names))
    size = np.sqrt(sum(np.sum(reference[n] ** 2) for n in names))
    return {
        **{f"loss rel. diff, steps 1-{s}": float(rel[s - 1]) for s in at_steps},
        "params rel. distance": distance / size,
    }
