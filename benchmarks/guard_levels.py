"""What the divergence guard's bounds rest on: a run's loss and params' norm at every step, and the checksum's cost.

    python -m benchmarks.guard_levels --out=/tmp/s0.jsonl -- --num_labels=100 --shadow_layer=3 --steps=60 \
        --seed=0 --data_dir=../shared/datasets --workdir=/tmp/trace_s0
    python -m benchmarks.guard_levels --cost

The first runs ``experiments.mnist`` with the flags after ``--``, the
guard's bounds lifted (so a blow-up runs on to NaN), and writes one JSON
line per step to ``--out``: the step, its loss and the params' global norm,
each as a ratio to the first step's (syncing every step: a measurement,
not a way to train). It prints the largest finite ratios. The second
times ``guard.digest`` (the checksum recorded with each checkpoint) on a
fresh TrainState of the MNIST MLP and the CIFAR-10 CNN, and orbax's save
of the MLP's, best of 5. BUILD_NOTES ("Divergence guard and checkpoint
integrity") quotes both.
"""

from __future__ import annotations

import math
import runpy
import sys
import tempfile
import time

import jax
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging

from rev_nets import nets
from rev_nets.train import TrainConfig, guard, internals, loop, rundir

_OUT = flags.DEFINE_string("out", None, "Where to write the per-step trace of the run given after --.")
_COST = flags.DEFINE_boolean("cost", False, "Time the checkpoint checksum instead.")


def trace(out: str, argv: list[str]) -> None:
    """Runs ``experiments.mnist`` with ``argv`` and the guard's bounds lifted, writing each step's loss and norm."""
    guard.LOSS_FACTOR = guard.NORM_FACTOR = math.inf
    make_step, norm, rows = loop.make_train_step, jax.jit(optax.tree.norm), []

    def traced(*args, **kwargs):
        step_fn = make_step(*args, **kwargs)

        def step(state, acc, *rest):
            before = float(jax.device_get(acc["loss"])) if int(jax.device_get(acc["steps"])) else 0.0
            state, acc = step_fn(state, acc, *rest)
            loss = float(jax.device_get(acc["loss"])) - before
            rows.append({"step": int(state.step), "loss": loss, "norm": float(norm(state.params))})
            return state, acc

        return step

    loop.make_train_step = traced
    sys.argv = ["experiments.mnist", *argv]
    try:
        runpy.run_module("experiments.mnist", run_name="__main__")
    except SystemExit:
        pass
    first = rows[0]
    with open(out, "w") as f:
        f.writelines(rundir.json_text(row | {k: row[k] / first[k] for k in ("loss", "norm")}) + "\n" for row in rows)
    finite = lambda k: [row[k] / first[k] for row in rows if math.isfinite(row[k])]
    print(
        f"{len(rows)} steps; largest finite loss ratio {max(finite('loss')):.3g}, norm ratio {max(finite('norm')):.3g}"
    )


def best_of_5(fn) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cost() -> None:
    """Prints the checksum's time on the two built-in nets' states, and orbax's save of the MLP's."""
    for name, net in [("MNIST MLP", nets.mnist_mlp()), ("CIFAR-10 CNN", nets.cifar_cnn())]:
        fresh = internals.create_state(net, TrainConfig(), 100)
        print(f"{name}: guard.digest {best_of_5(lambda state=fresh: guard.digest(state)) * 1000:.1f} ms")
    state = internals.create_state(nets.mnist_mlp(), TrainConfig(), 100)
    with tempfile.TemporaryDirectory() as folder:
        manager, steps = rundir.checkpoint_manager(folder), iter(range(1, 100))
        save = lambda: manager.save(next(steps), args=ocp.args.StandardSave(state))
        print(f"MNIST MLP: orbax save {best_of_5(save) * 1000:.1f} ms")


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    if _COST.value:
        cost()
    elif _OUT.value:
        trace(_OUT.value, argv[1:])
    else:
        raise app.UsageError("give --cost, or --out and the flags of an experiments.mnist run after --.")


if __name__ == "__main__":
    app.run(main)
