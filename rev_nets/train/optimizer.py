"""The optimizer: SGD with momentum or Adam on a warm-up + cosine schedule, and a run's fresh TrainState."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax.training import train_state

from rev_nets import models
from rev_nets.train.config import TrainConfig


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


def make_optimizer(
    config: TrainConfig, steps_per_epoch: int, trainable: Any = True
) -> optax.GradientTransformation:
    """SGD with momentum or Adam on the schedule, with optional clipping and weight decay, moving only the leaves
    ``trainable`` (a model's ``trainable(params)``) marks: BatchNorm statistics and constants get no update, no
    optimizer state and no weight decay. The optimizer proper is the chain's last part, whatever the clipping."""
    lr = learning_rate_schedule(config, steps_per_epoch)
    moves = all(jax.tree.leaves(trainable))  # Every leaf moves: the plain chain (and its optimizer state).
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=None if moves else trainable))
    descent = optax.sgd(lr, momentum=config.momentum) if config.optimizer == "sgd" else optax.adam(lr)
    if not moves:
        labels = jax.tree.map(lambda leaf_moves: "trained" if leaf_moves else "fixed", trainable)
        descent = optax.multi_transform({"trained": descent, "fixed": optax.set_to_zero()}, labels)
    return optax.chain(*parts, descent)


def create_state(
    model: models.Model, config: TrainConfig, steps_per_epoch: int, images: jax.Array | None = None
) -> train_state.TrainState:
    """A fresh TrainState with the run's seed, its data-dependent constants fitted to ``images`` (some of the
    standardised training images) when given."""
    params = model.init(jax.random.key(config.seed))
    if images is not None:
        params = model.prepare(params, images)
    tx = make_optimizer(config, steps_per_epoch, model.trainable(params))
    return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
