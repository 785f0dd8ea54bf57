"""The jitted train step (one SGD step on a batch of SHADOW or plain examples) and batched evaluation.

Both are pure functions of their arguments. ``make_train_step`` jits the
step once per net and config with the state donated; ``evaluate`` sums a
split's errors batch by batch through a ``dispatch.DispatchWindow``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rev_nets import consistency, data, dispatch, generator, models, shadow
from rev_nets.data import augmentation
from rev_nets.errors import InputError
from rev_nets.train.config import TrainConfig
from rev_nets.train.mesh import batch_sharding, shard_batch

Metrics = dict[str, jax.Array]
CONSISTENCY_STREAM = 1 << 30  # fold_in tag of a step's consistency key: apart from the supervised loss's splits
AUGMENT_STREAM = (1 << 30) + 1  # fold_in tag of a step's augmentation key


def zero_metrics(config: TrainConfig) -> Metrics:
    """The on-device accumulator the train step adds into."""
    names = ["loss", "ce_real", "error_real", "grad_norm"]
    if config.grad_clip:
        names += ["clipped"]
    if config.shadow.enabled:
        names += ["ce_synthetic", "error_synthetic", "norm_ratio"]
    if config.consistency.enabled:
        names += ["consistency", "twin_agreement", "twin_norm_ratio"]
    acc = {name: jnp.zeros((), jnp.float32) for name in names}
    return acc | {"steps": jnp.zeros((), jnp.int32), "finite": jnp.ones((), bool)}


def train_step(
    model: models.Model,
    config: TrainConfig,
    state: train_state.TrainState,
    acc: Metrics,
    split: data.DeviceSplit,
    indices: jax.Array,
    key: jax.Array,
    *,
    steps_per_epoch: int,
    batch_sharding: NamedSharding | None = None,
    alpha: tuple[jax.Array, ...] | None = None,
    unlabelled: jax.Array | None = None,
    unlabelled_indices: jax.Array | None = None,
) -> tuple[train_state.TrainState, Metrics]:
    """One SGD step on the batch ``indices`` of ``split``; adds its metrics to ``acc``.

    ``steps_per_epoch`` places SHADOW's ``start_epoch`` and the consistency
    ramp-up on the step count; ``alpha`` holds frozen generator alphas
    (``make_alpha_fit``), if any. With ``config.consistency`` on, the
    consistency loss of the unlabelled images ``unlabelled[unlabelled_indices]``
    is added at its ramped weight. ``config.augment`` flips and translates
    each real image first (its own draw from ``key``): SHADOW's twins are
    made from the augmented batch. With ``batch_sharding`` the batch is split
    along the mesh's data axis, so XLA runs each device's share and
    all-reduces the gradients. A model with BatchNorm averages the real
    batch's statistics (over the whole batch, all devices) into its params.
    """
    x, y = shard_batch(data.batch_at(split, indices), batch_sharding)
    epoch = state.step // steps_per_epoch
    x = data.augment(
        jax.random.fold_in(key, AUGMENT_STREAM), x, config.augment, indices=indices, epoch=epoch, seed=config.seed
    )
    weight = shadow.weight_at(config.shadow, state.step, steps_per_epoch)
    if config.consistency.enabled:
        u = shard_batch(jnp.take(unlabelled, unlabelled_indices, axis=0), batch_sharding)
        u_weight = consistency.weight_at(config.consistency, state.step, steps_per_epoch * config.epochs)

    def objective(params):
        params = models.hold_fixed(model, params)
        value, (metrics, stats) = shadow.loss(
            model,
            params,
            x,
            y,
            config.shadow,
            key,
            dropout=config.dropout,
            weight=weight,
            alpha=alpha,
            label_smoothing=config.label_smoothing,
        )
        if config.consistency.enabled:
            u_key = jax.random.fold_in(key, CONSISTENCY_STREAM)
            u_value, u_metrics = consistency.loss(model, params, u, config.consistency, config.shadow.generator, u_key)
            value, metrics = value + u_weight * u_value, metrics | u_metrics
        return value, (metrics, stats)

    (loss, (metrics, stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    for batch_stats in stats or ():  # BatchNorm's running update, in the order the loss gives
        state = state.replace(params=model.with_stats(state.params, batch_stats, average=True))
    metrics |= gradient_metrics(grads, config.grad_clip)
    sums = {name: acc[name] + value for name, value in (metrics | {"loss": loss}).items()}
    return state, sums | {"steps": acc["steps"] + 1, "finite": acc["finite"] & jnp.isfinite(loss)}


def gradient_metrics(grads, grad_clip: float) -> Metrics:
    """The gradient's global norm before clipping, and with ``grad_clip`` whether this step was clipped: where
    clipping acts (SHADOW's first steps, see BUILD_NOTES "SHADOW's early blow-up") shows in a run's metrics."""
    norm = optax.tree.norm(grads)
    return {"grad_norm": norm} | ({"clipped": (norm > grad_clip).astype(jnp.float32)} if grad_clip else {})


def make_train_step(model: models.Model, config: TrainConfig, mesh: Mesh, steps_per_epoch: int):
    """``train_step`` jitted once for ``model`` and ``config``, the state's buffers donated.

    The jitted step takes the whole epoch: its batch order ``(steps_per_epoch,
    batch_size)`` and its key. It picks row ``state.step % steps_per_epoch``
    and that step's key (``fold_in(epoch_key, row + 1)``) on device, so a
    training step costs one dispatch and no host work (``make_epoch_plan``
    makes both on the mesh; an array placed elsewhere is copied every step).
    The metrics are not donated, so a loop can hand each step's metrics to
    a ``dispatch.DispatchWindow`` and wait for them later. ``alpha`` is
    ``make_alpha_fit``'s output for an ``alpha="data"`` config, else None.
    A consistency config also takes the unlabelled images and their epoch
    order (``make_sampled_plan``).
    """

    def step(state, acc, split, order, epoch_key, alpha=None, unlabelled=None, unlabelled_order=None):
        for rows in (order, unlabelled_order):
            if rows is not None and rows.shape[0] != steps_per_epoch:  # Out-of-range rows would be clamped.
                raise InputError(f"an order has {rows.shape[0]} rows but an epoch has {steps_per_epoch} steps.")
        row = state.step % steps_per_epoch
        return train_step(
            model,
            config,
            state,
            acc,
            split,
            order[row],
            jax.random.fold_in(epoch_key, row + 1),
            steps_per_epoch=steps_per_epoch,
            batch_sharding=batch_sharding(mesh),
            alpha=alpha,
            unlabelled=unlabelled,
            unlabelled_indices=None if unlabelled_order is None else unlabelled_order[row],
        )

    return jax.jit(step, donate_argnums=0)


def make_alpha_fit(model: models.Model, config: TrainConfig, mesh: Mesh):
    """Jitted ``(params, split, indices) -> alphas``: the generator's alphas fitted on one batch.

    For a config with ``alpha="data"`` the loop fits them at each epoch's
    start and freezes them for the epoch, so the fit costs one batch's
    reverse pass per epoch, not one per step. BatchNorm layers scale by
    that batch's statistics, as in the training step's generator.
    """

    def fit(params, split, indices):
        x, _ = shard_batch(data.batch_at(split, indices), batch_sharding(mesh))
        at_batch = model.with_stats(params, model.forward(params, x, key=jax.random.key(0)).stats)
        features = lambda v: model.features(at_batch, v, config.shadow.layer)
        return generator.alphas(features, x, config.shadow.generator, smooth_sigma=0.0)

    return jax.jit(fit)


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


def make_sampled_plan(mesh: Mesh, num_train: int, num_unlabelled: int, config: TrainConfig, steps_per_epoch: int):
    """Jitted ``(base_key, epoch) -> (order, unlabelled_order, epoch_key)`` for a few-label run, made on the mesh.

    Labelled batches of ``min(batch_size, num_train)`` and, with consistency
    on, unlabelled batches of ``batch_size`` are drawn with replacement
    (``data.sampled_batches``): a few labels make no whole epochs.
    ``unlabelled_order`` is None without consistency.
    """
    labelled_batch = min(config.batch_size, num_train)

    def plan(base_key, epoch):
        epoch_key = jax.random.fold_in(base_key, epoch)
        labelled_key, unlabelled_key = jax.random.split(jax.random.fold_in(epoch_key, 0))
        order = data.sampled_batches(labelled_key, num_train, steps_per_epoch, labelled_batch)
        if not config.consistency.enabled:
            return order, None, epoch_key
        unlabelled = data.sampled_batches(unlabelled_key, num_unlabelled, steps_per_epoch, config.batch_size)
        return order, unlabelled, epoch_key

    replicated = NamedSharding(mesh, P())
    return jax.jit(plan, out_shardings=replicated)


def eval_step(
    model: models.Model,
    synthetic_config: shadow.ShadowConfig,
    params,
    split: data.DeviceSplit,
    indices: jax.Array,
    mask: jax.Array,
    *,
    batch_sharding: NamedSharding | None = None,
    views: int = 0,
    synthetic: bool = True,
) -> Metrics:
    """Summed real errors and cross-entropy over the unmasked examples, and (``synthetic``) the synthetic errors
    (``synthetic_config``: the synthetic test data's generator, ``TrainConfig.synthetic_config``). The real
    logits average the test-time views of level ``views`` (``data.augmentation.test_views``); the twins are
    made from, and judged on, the images as they are. BatchNorm uses the running statistics throughout."""
    x, y = shard_batch(data.batch_at(split, indices), batch_sharding)
    logits = sum(weight * model.forward(params, view).logits for weight, view in augmentation.test_views(x, views))
    wrong = lambda lg: jnp.sum((jnp.argmax(lg, -1) != y) * mask)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    sums = {"errors": wrong(logits), "ce": jnp.sum(ce * mask)}
    if synthetic:
        x_syn = shadow.twins(model, params, x, synthetic_config, None)
        sums["synthetic_errors"] = wrong(model.forward(params, x_syn).logits)
    return sums


def evaluate(
    eval_fn,
    params,
    split: data.DeviceSplit,
    batch_size: int,
    multiple: int = 1,
    window: dispatch.DispatchWindow | None = None,
) -> dict[str, float]:
    """Error, loss and (where ``eval_fn`` gives it) synthetic error over a whole split, in padded fixed-size
    batches.

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
    names = {"errors": "error", "synthetic_errors": "synthetic_error", "ce": "loss"}
    return {names[key]: float(total) / n for key, total in totals.items()}
