"""Training: a TrainState, one jitted train step, batched eval, a resumable fit loop.

The fit loop keeps the data on device, runs one jitted step per batch (traced
once, the state donated), accumulates metrics and a finite-loss flag on device
and reads them only at each log interval; a ``dispatch.DispatchWindow`` keeps
it at most 16 steps ahead of the devices (XLA:CPU aborts past 32). Each
epoch it evaluates real and synthetic error on validation and test, appends
a line to ``metrics.jsonl`` (and TensorBoard scalars, when tensorboardX is
installed), redraws the figures and saves an orbax checkpoint (the step-0
checkpoint is kept too). A restarted run resumes from the latest
checkpoint and drops metric lines beyond it, so a killed run ends with the
same numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rev_nets import data, dispatch, generator, nets, plots, shadow

Metrics = dict[str, jax.Array]


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, a config that differs from the saved one)."""


class DivergedError(TrainingError):
    """The training loss became non-finite: a restart with the same settings would repeat it."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's numbers (saved as ``config.json``)."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.05
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (after linear warm-up) or "constant"
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0  # global-norm clipping; 0 = off
    dropout: float = 0.0
    seed: int = 0
    shadow: shadow.ShadowConfig = dataclasses.field(default_factory=lambda: shadow.ShadowConfig(layer=0))
    eval_batch_size: int = 1000
    log_every: int = 50

    def check(self, net: nets.Net) -> None:
        """Raises ``ValueError`` with one sentence for values that make no sense."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        for name in ("grad_clip", "weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}.")
        self.shadow.check(net)
        if not self.shadow.enabled and self.shadow.start_epoch:
            raise ValueError("shadow_start_epoch needs SHADOW on; give --shadow_layer=1..depth or drop the start.")
        if self.shadow.enabled and self.shadow.start_epoch >= self.epochs:
            raise ValueError(
                f"shadow_start_epoch={self.shadow.start_epoch} leaves no SHADOW epoch in a {self.epochs}-epoch run; "
                "give a smaller start or --shadow_layer=0 for plain backprop."
            )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{**d, "shadow": shadow.ShadowConfig(**d["shadow"])})


# ------------------------------------------------------------ optimizer --


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from 0, then cosine decay to 0 (or constant) over the run."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "cosine":
        after = optax.cosine_decay_schedule(config.learning_rate, max(total - warmup, 1))
    else:
        after = optax.constant_schedule(config.learning_rate)
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), after], [warmup])


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum or Adam on the schedule, with optional clipping and weight decay."""
    lr = learning_rate_schedule(config, steps_per_epoch)
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.sgd(lr, momentum=config.momentum) if config.optimizer == "sgd" else optax.adam(lr))
    return optax.chain(*parts)


def create_state(net: nets.Net, config: TrainConfig, steps_per_epoch: int) -> train_state.TrainState:
    """A fresh TrainState with the run's seed."""
    params = nets.init(jax.random.key(config.seed), net)
    return train_state.TrainState.create(apply_fn=None, params=params, tx=make_optimizer(config, steps_per_epoch))


# ------------------------------------------------------------- sharding --


def data_mesh() -> Mesh:
    """One ``data`` axis over every device of every process (1 CPU, 8 host devices, a GPU, a TPU slice)."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicate(tree, mesh: Mesh):
    """Every leaf as a global array replicated on all devices of ``mesh`` (works across processes)."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def shard_batch(batch, sharding: NamedSharding | None):
    """Constrains a batch's leading axis to ``sharding`` (no-op without one)."""
    if sharding is None:
        return batch
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), batch)


# ----------------------------------------------------------------- steps --


def zero_metrics(config: TrainConfig) -> Metrics:
    """The on-device accumulator the train step adds into."""
    names = ["loss", "ce_real", "error_real"]
    if config.shadow.enabled:
        names += ["ce_synthetic", "error_synthetic", "norm_ratio"]
    acc = {name: jnp.zeros((), jnp.float32) for name in names}
    return acc | {"steps": jnp.zeros((), jnp.int32), "finite": jnp.ones((), bool)}


def train_step(
    net: nets.Net,
    config: TrainConfig,
    state: train_state.TrainState,
    acc: Metrics,
    split: data.DeviceSplit,
    indices: jax.Array,
    key: jax.Array,
    *,
    steps_per_epoch: int,
    batch_sharding: NamedSharding | None = None,
) -> tuple[train_state.TrainState, Metrics]:
    """One SGD step on the batch ``indices`` of ``split``; adds its metrics to ``acc``.

    ``steps_per_epoch`` places SHADOW's ``start_epoch`` on the step count.
    With ``batch_sharding`` the batch is split along the mesh's data axis, so
    XLA runs each device's share and all-reduces the gradients.
    """
    x, y = shard_batch(data.batch_at(split, indices), batch_sharding)
    weight = shadow.weight_at(config.shadow, state.step, steps_per_epoch)

    def objective(params):
        return shadow.loss(net, params, x, y, config.shadow, key, dropout=config.dropout, weight=weight)

    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    sums = {name: acc[name] + value for name, value in (metrics | {"loss": loss}).items()}
    return state, sums | {"steps": acc["steps"] + 1, "finite": acc["finite"] & jnp.isfinite(loss)}


def make_train_step(net: nets.Net, config: TrainConfig, mesh: Mesh, steps_per_epoch: int):
    """``train_step`` jitted once for ``net`` and ``config``, the state's buffers donated.

    The jitted step takes the whole epoch: its batch order ``(steps_per_epoch,
    batch_size)`` and its key. It picks row ``state.step % steps_per_epoch``
    and that step's key (``fold_in(epoch_key, row + 1)``) on device, so a
    training step costs one dispatch and no host work (``make_epoch_plan``
    makes both on the mesh; an array placed elsewhere is copied every step).
    The metrics are not donated, so a loop can hand each step's metrics to
    a ``dispatch.DispatchWindow`` and wait for them later.
    """

    def step(state, acc, split, order, epoch_key):
        if order.shape[0] != steps_per_epoch:  # Out-of-range rows would be clamped silently.
            raise ValueError(f"order has {order.shape[0]} rows but an epoch has {steps_per_epoch} steps.")
        row = state.step % steps_per_epoch
        return train_step(
            net,
            config,
            state,
            acc,
            split,
            order[row],
            jax.random.fold_in(epoch_key, row + 1),
            steps_per_epoch=steps_per_epoch,
            batch_sharding=batch_sharding(mesh),
        )

    return jax.jit(step, donate_argnums=0)


def make_epoch_plan(mesh: Mesh, num_train: int, batch_size: int):
    """Jitted ``(base_key, epoch) -> (order, epoch_key)``: an epoch's batch order and key, made on the mesh.

    Both come out replicated over ``mesh``, so the train step takes them
    as they are: no host round trip, no copy per step.
    """

    def plan(base_key, epoch):
        epoch_key = jax.random.fold_in(base_key, epoch)
        return data.epoch_batches(jax.random.fold_in(epoch_key, 0), num_train, batch_size), epoch_key

    replicated = NamedSharding(mesh, P())
    return jax.jit(plan, out_shardings=(replicated, replicated))


def eval_config(config: TrainConfig, net: nets.Net) -> shadow.ShadowConfig:
    """Synthetic test data: the configured generator (layer 3, or the top of a shallower net, when SHADOW is
    off), no sampling, no placebo."""
    layer = config.shadow.layer or min(3, net.depth)
    return dataclasses.replace(config.shadow, layer=layer, rho=1.0, noise_twin=False)


def eval_step(
    net: nets.Net,
    generator_config: shadow.ShadowConfig,
    params: nets.Params,
    split: data.DeviceSplit,
    indices: jax.Array,
    mask: jax.Array,
    *,
    batch_sharding: NamedSharding | None = None,
) -> Metrics:
    """Summed real/synthetic errors and real cross-entropy over the unmasked examples."""
    x, y = shard_batch(data.batch_at(split, indices), batch_sharding)
    logits, hiddens = nets.forward(net, params, x)
    x_syn = shadow.synthetic_batch(net, params, x, hiddens, generator_config, None)
    logits_syn, _ = nets.forward(net, params, x_syn)
    wrong = lambda lg: jnp.sum((jnp.argmax(lg, -1) != y) * mask)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"errors": wrong(logits), "synthetic_errors": wrong(logits_syn), "ce": jnp.sum(ce * mask)}


def evaluate(
    eval_fn,
    params: nets.Params,
    split: data.DeviceSplit,
    batch_size: int,
    multiple: int = 1,
    window: dispatch.DispatchWindow | None = None,
) -> dict[str, float]:
    """Error, synthetic error and loss over a whole split, in padded fixed-size batches.

    The batch shrinks for small splits, staying a multiple of ``multiple`` (the device count).
    Batches are dispatched through ``window`` (the caller's, so that its
    earlier dispatches count too; else a new one) and their sums are added
    on the host, in float32 and in batch order.
    """
    n = int(split.labels.shape[0])
    batch_size = min(batch_size, math.ceil(n / multiple) * multiple)
    padded = math.ceil(n / batch_size) * batch_size
    indices = np.arange(padded) % n
    mask = (np.arange(padded) < n).astype(np.float32)
    window = dispatch.DispatchWindow() if window is None else window
    sums = [
        window(eval_fn(params, split, indices[start : start + batch_size], mask[start : start + batch_size]))
        for start in range(0, padded, batch_size)
    ]
    totals = functools.reduce(lambda a, b: jax.tree.map(np.add, a, b), jax.device_get(sums))
    return {
        "error": float(totals["errors"]) / n,
        "synthetic_error": float(totals["synthetic_errors"]) / n,
        "loss": float(totals["ce"]) / n,
    }


# -------------------------------------------------------------- workdir --


def check_config(workdir: str, config_json: dict[str, Any]) -> None:
    """Writes ``config.json``, or stops if an existing one differs from ``config_json``.

    A setting added after a run was saved takes its default value there, so
    older runs still resume.
    """
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if "train" in saved:
            try:
                saved["train"] = TrainConfig.from_json(saved["train"]).to_json()
            except (TypeError, KeyError) as error:
                raise TrainingError(
                    f"{path} holds settings this version cannot read ({error}); start a new --workdir."
                ) from None
        saved, wanted = json.loads(json.dumps(saved)), json.loads(json.dumps(config_json))  # Tuples become lists.
        if saved != wanted:
            diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise TrainingError(
                f"{workdir} holds a run with different settings ({', '.join(diff)}); "
                "pass the same flags to resume it, or a new --workdir to start another run."
            )
        return
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The metric lines of ``workdir``, skipping a last line cut short by a kill."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    complete = []
    for i, line in enumerate(lines):
        try:
            complete.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:  # Only a run killed mid-write leaves a broken (last) line.
                raise
    return complete


def truncate_metrics(workdir: str, last_step: int) -> list[dict[str, Any]]:
    """Drops metric lines written after the checkpoint at ``last_step``; returns the rest."""
    kept = [m for m in read_metrics(workdir) if m["step"] <= last_step]
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in kept)
    os.replace(path + ".tmp", path)
    return kept


def append_metrics(workdir: str, line: dict[str, Any]) -> None:
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def tensorboard_writer(workdir: str, purge_step: int):
    """A TensorBoard writer for ``<workdir>/tensorboard`` when tensorboardX is installed, else None.

    ``purge_step`` drops events a killed run wrote after its last checkpoint,
    as ``truncate_metrics`` does for ``metrics.jsonl``.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge_step)


def write_scalars(writer, line: dict[str, Any]) -> None:
    """One epoch's numeric metrics as TensorBoard scalars at its step."""
    for name, value in line.items():
        if name not in ("epoch", "step", "devices") and isinstance(value, (int, float)):
            writer.add_scalar(name, value, line["step"])
    writer.flush()


def checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
    """Keeps the two latest checkpoints and always the one of step 0 (initial weights)."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [ocp.checkpoint_managers.LatestN(2), ocp.checkpoint_managers.CustomSteps([0])]
    )
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def saved_states(workdir: str) -> dict[int, dict[str, Any]]:
    """The first and last checkpoints of a run directory, read-only, as trees on this host's first device.

    The target is built from the checkpoint's own metadata, so a run saved
    over 8 CPU devices (or a GPU) opens on one device.
    """
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    none_yet = TrainingError(f"{workdir} holds no checkpoints yet; train it first, or wait for its first save.")
    if not os.path.isdir(directory):
        raise none_yet
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only manager will not save.
    try:
        manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(read_only=True),
            item_handlers=ocp.StandardCheckpointHandler(),
        )
    finally:
        logging.set_verbosity(verbosity)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def restore(step):
        on_device = lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
        target = jax.tree.map(on_device, manager.item_metadata(step))
        return manager.restore(step, args=ocp.args.StandardRestore(target))

    with manager:
        steps = manager.all_steps()
        if not steps:
            raise none_yet
        return {step: restore(step) for step in sorted({min(steps), max(steps)})}


# ------------------------------------------------------------------ fit --


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _mean_metrics(acc: Metrics) -> dict[str, float]:
    host = jax.device_get(acc)
    steps = max(int(host["steps"]), 1)
    return {name: float(value) / steps for name, value in host.items() if name not in ("steps", "finite")}


def _check_finite(acc: Metrics, epoch: int, step: int) -> None:
    if not bool(jax.device_get(acc["finite"])):
        raise DivergedError(
            f"the training loss became NaN or infinite in epoch {epoch} (by step {step}); the last good checkpoint "
            "is kept: lower --learning_rate, or set --grad_clip or --warmup_epochs, and start a new --workdir."
        )


def fit(
    net: nets.Net,
    config: TrainConfig,
    train: data.DeviceSplit,
    evals: dict[str, data.DeviceSplit],
    workdir: str,
    *,
    extra_config: dict[str, Any] | None = None,
    figures: bool = True,
) -> tuple[train_state.TrainState, list[dict[str, Any]]]:
    """Trains (or resumes) a run in ``workdir``; returns the final state and all metric lines.

    ``evals`` maps split names (e.g. "validation", "test") to device data;
    each epoch's line holds ``<name>_error`` and ``<name>_synthetic_error``.
    """
    config.check(net)
    num_train = int(train.labels.shape[0])
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch < 1:
        raise TrainingError(
            f"batch_size={config.batch_size} is larger than the {num_train} training examples; give a smaller one."
        )
    mesh = data_mesh()
    for name, size in (("batch_size", config.batch_size), ("eval_batch_size", config.eval_batch_size)):
        if size % mesh.size:
            raise TrainingError(
                f"{name}={size} must be a multiple of the {mesh.size} devices the batch is split over; "
                "round it, or change the device count (--cpu_devices on CPU)."
            )
    check_config(workdir, {"train": config.to_json(), "net": repr(net), **(extra_config or {})})

    train, replicated = replicate((train, evals), mesh)
    evals = {name: replicated[name] for name in evals}  # Keep the caller's order (pytrees sort dict keys).
    state = replicate(create_state(net, config, steps_per_epoch), mesh)
    manager = checkpoint_manager(workdir)
    history: list[dict[str, Any]] = []
    if manager.latest_step() is None:
        manager.save(0, args=ocp.args.StandardSave(state))
    else:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
        history = truncate_metrics(workdir, int(state.step))
        print(f"resumed {workdir} at step {int(state.step)} (epoch {int(state.step) // steps_per_epoch})", flush=True)

    writer = tensorboard_writer(workdir, purge_step=int(state.step) + 1)
    step_fn = make_train_step(net, config, mesh, steps_per_epoch)
    epoch_plan = make_epoch_plan(mesh, num_train, config.batch_size)
    eval_fn = jax.jit(functools.partial(eval_step, net, eval_config(config, net), batch_sharding=batch_sharding(mesh)))
    base_key = jax.random.key(config.seed)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    wall = history[-1]["wall_time_s"] if history else 0.0
    first_epoch = int(state.step) // steps_per_epoch

    window = dispatch.DispatchWindow()
    for epoch in range(first_epoch + 1, config.epochs + 1):
        order, epoch_key = window(epoch_plan(base_key, epoch))
        acc = replicate(zero_metrics(config), mesh)
        start = time.perf_counter()
        for i in range(steps_per_epoch):
            state, acc = step_fn(state, acc, train, order, epoch_key)
            window(acc)
            if (i + 1) % config.log_every == 0 or i + 1 == steps_per_epoch:
                _check_finite(acc, epoch, int(state.step))
                elapsed = time.perf_counter() - start
                rate = (i + 1) * config.batch_size / elapsed
                left = (steps_per_epoch - i - 1 + (config.epochs - epoch) * steps_per_epoch) * config.batch_size / rate
                means = _mean_metrics(acc)
                print(
                    f"epoch {epoch}/{config.epochs} step {i + 1}/{steps_per_epoch} loss {means['loss']:.4f} "
                    f"train error {means['error_real']:.2%} {rate:,.0f} img/s ETA {_format_eta(left)}",
                    flush=True,
                )
        train_time = time.perf_counter() - start
        wall += train_time
        line = {"epoch": epoch, "step": int(state.step), "learning_rate": float(schedule(int(state.step) - 1))}
        line |= {f"train_{name}": value for name, value in _mean_metrics(acc).items()}
        for name, split in evals.items():
            result = evaluate(eval_fn, state.params, split, config.eval_batch_size, mesh.size, window)
            line |= {f"{name}_{key}": value for key, value in result.items()}
        line |= {
            "epoch_time_s": train_time,
            "wall_time_s": wall,
            "images_per_s": steps_per_epoch * config.batch_size / train_time,
            "devices": mesh.size,
        }
        append_metrics(workdir, line)
        history.append(line)
        if writer:
            write_scalars(writer, line)
        manager.save(int(state.step), args=ocp.args.StandardSave(state))
        print(_summary(line, evals), flush=True)
        if figures:
            write_figures(net, config, state.params, evals, history, workdir)
    manager.wait_until_finished()
    if writer:
        writer.close()
    return state, history


def _summary(line: dict[str, Any], evals) -> str:
    parts = [f"epoch {line['epoch']}:"]
    for name in evals:
        parts.append(f"{name} error {line[f'{name}_error']:.2%} (synthetic {line[f'{name}_synthetic_error']:.2%})")
    parts.append(f"{line['epoch_time_s']:.0f}s")
    return " ".join(parts)


def write_figures(net, config: TrainConfig, params, evals, history, workdir: str, num_images: int = 8) -> None:
    """Learning curves (against epochs and wall time) and real vs synthetic images from every layer."""
    fig_dir = os.path.join(workdir, "figures")
    epochs = [m["epoch"] for m in history]
    wall = [m["wall_time_s"] / 60 for m in history]
    for x, name, label in (
        (epochs, "learning_curves.png", "epoch"),
        (wall, "learning_curves_wall.png", "training minutes"),
    ):
        series = {}
        for split in evals:
            series[f"{split} real"] = (x, [m[f"{split}_error"] for m in history])
            series[f"{split} synthetic"] = (x, [m[f"{split}_synthetic_error"] for m in history])
        plots.learning_curves(series, os.path.join(fig_dir, name), xlabel=label, title=arm_name(config))
    split = evals.get("test") or next(iter(evals.values()))
    settings = eval_config(config, net).generator_settings()
    # On one device: eager ops on arrays spread over a mesh would each be an unsynced multi-device dispatch.
    images = split.images.addressable_data(0)[:num_images]
    rows = generator.twins_by_layer(net, jax.device_put(params, images.sharding), images, **settings)
    plots.image_grid(rows, os.path.join(fig_dir, "synthetic_images.png"), title=arm_name(config))


def arm_name(config: TrainConfig) -> str:
    s = config.shadow
    arm = "backprop" if not s.enabled else f"SHADOW h{s.layer} w={s.weight:g}"
    if s.enabled and s.rho < 1:
        arm += f" rho={s.rho:g}"
    if s.enabled and s.smooth_sigma:
        arm += f" smooth={s.smooth_sigma:g}"
    if s.enabled and s.alpha_scale != 1:
        arm += f" alpha x{s.alpha_scale:g}"
    if s.enabled and s.start_epoch:
        arm += f" from epoch {s.start_epoch:g}"
    if s.enabled and s.noise_twin:
        arm += " (noise twin)"
    return arm + (f", dropout {config.dropout:g}" if config.dropout else "")
