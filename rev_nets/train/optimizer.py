"""The optimizer: SGD with momentum (Nesterov optional) or Adam on a warm-up then decay schedule, per parameter
group, with optional lookahead; and a run's fresh TrainState."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from rev_nets import models
from rev_nets.errors import SettingError
from rev_nets.train.config import TrainConfig


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from ``warmup_from`` of the rate (``warmup_epochs`` long, or ``warmup_fraction`` of the
    run), then cosine or linear decay to ``final_lr_fraction`` of it at the run's end (or constant)."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch) or round(config.warmup_fraction * total)
    peak, rest = config.learning_rate, max(total - warmup, 1)
    if config.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, rest, alpha=config.final_lr_fraction)
    elif config.schedule == "linear":
        after = optax.linear_schedule(peak, peak * config.final_lr_fraction, rest)
    else:
        after = optax.constant_schedule(peak)
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(peak * config.warmup_from, peak, warmup), after], [warmup])


def check_lookahead(every: int, total_steps: int) -> None:
    """Refuses a lookahead period longer than the run: no average would be taken and the run would end on its
    initial params."""
    if every > total_steps:
        raise SettingError(
            "lookahead_every",
            f"is {every}, longer than the run's {total_steps} steps: no average would be taken and the run would end "
            f"at its initial weights; give at most {total_steps}, or 0 for no lookahead.",
        )


def lookahead(every: int, total_steps: int) -> optax.GradientTransformation:
    """airbench94's lookahead: every ``every`` steps, a slow average ``slow += (1 - decay) * (params - slow)`` with
    ``decay = 0.95 ** every * (step / total_steps) ** 3`` (no averaging at first, more and more later), and the
    params set to it; at the run's last step (after that step's averaging, if due) the params become the slow
    average. Its state is the average. A run shorter than ``every`` is refused (``check_lookahead``)."""
    check_lookahead(every, total_steps)

    def init(params):
        return {"slow": params, "count": jnp.zeros((), jnp.int32)}

    def update(updates, state, params):
        count = state["count"] + 1
        fresh = optax.apply_updates(params, updates)
        averages = count % every == 0
        decay = 0.95**every * (count / total_steps) ** 3
        slow = jax.tree.map(lambda s, p: jnp.where(averages, s + (1 - decay) * (p - s), s), state["slow"], fresh)
        syncs = averages | (count >= total_steps)
        moved = jax.tree.map(lambda s, p, u: jnp.where(syncs, s - p, u), slow, params, updates)
        return moved, {"slow": slow, "count": count}

    return optax.GradientTransformation(init, update)


def _descent(config: TrainConfig, lr: optax.Schedule, scale: float) -> list[optax.GradientTransformation]:
    """Weight decay, then SGD (Nesterov optional) or Adam at ``scale`` times the schedule. The decay is divided by
    ``scale`` so that with SGD every group decays by the same amount per step, and, decoupled, by the peak rate so
    that the amount does not change with ``learning_rate``."""
    peak = config.learning_rate if config.decoupled_weight_decay else 1.0
    parts = [optax.add_decayed_weights(config.weight_decay / (scale * peak))] if config.weight_decay else []
    scaled = lambda step: scale * lr(step)
    if config.optimizer == "sgd":
        parts.append(optax.sgd(scaled, momentum=config.momentum, nesterov=config.nesterov))
    else:
        parts.append(optax.adam(scaled))
    return parts


def make_optimizer(config: TrainConfig, steps_per_epoch: int, groups: Any = "trained") -> optax.GradientTransformation:
    """The run's optimizer: global-norm clipping if set (always the chain's first part), then each of the model's
    ``param_groups`` (``models.GROUPS``) its own descent: BatchNorm shifts and scales at ``norm_lr_scale`` times
    the rate, statistics and constants held (no update, no state, no decay); then lookahead if set."""
    lr = learning_rate_schedule(config, steps_per_epoch)
    labels = jax.tree.leaves(groups)
    parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    if set(labels) == {"trained"}:  # A model without BatchNorm or constants: one descent (and its state).
        parts += _descent(config, lr, 1.0)
    else:
        scales = {"trained": 1.0, "norm": config.norm_lr_scale}
        descents = {name: optax.chain(*_descent(config, lr, scale)) for name, scale in scales.items()}
        parts.append(optax.multi_transform(descents | {"fixed": optax.set_to_zero()}, groups))
    if config.lookahead_every:
        moving = jax.tree.map(lambda label: label != "fixed", groups)
        parts.append(optax.masked(lookahead(config.lookahead_every, config.epochs * steps_per_epoch), moving))
    return optax.chain(*parts)


PREPARE_IMAGES = 5000  # training images a model's data-dependent constants (a whitening filter) are fitted on


def create_state(
    model: models.Model, config: TrainConfig, steps_per_epoch: int, images: jax.Array | None = None
) -> train_state.TrainState:
    """A fresh TrainState with the run's seed, its data-dependent constants fitted to the first ``PREPARE_IMAGES``
    of ``images`` (the standardised training images) when given."""
    params = model.init(jax.random.key(config.seed))
    if images is not None:
        params = model.prepare(params, images[:PREPARE_IMAGES])
    tx = make_optimizer(config, steps_per_epoch, models.checked_param_groups(model, params))
    return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
