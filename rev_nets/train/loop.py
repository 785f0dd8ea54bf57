"""The fit loop: ``fit_in_memory`` trains from arrays for N steps or epochs; ``fit`` wraps it in a run directory.

The loop keeps the data on device, runs one jitted step per batch (traced
once, the state donated), accumulates metrics and a finite-loss flag on
device and reads them only at each log interval (and after a run's first
step), where the divergence guard (``guard.Guard``) also reads the params'
global norm and stops a blow-up; a ``dispatch.DispatchWindow`` keeps it at
most 16 dispatches ahead of the devices (XLA:CPU aborts past 32). At the
end of each epoch it evaluates real and synthetic error on every evaluation
split and hands the epoch's metric line to a callback. ``fit``'s callback
appends the line to ``metrics.jsonl`` (and TensorBoard), saves an orbax
checkpoint of a state found sane and redraws the figures; a restarted
``fit`` resumes from the latest intact checkpoint, so a killed run ends
with the same numbers as an uninterrupted one. ``fit``'s ``stop``, polled
before each step, saves a checkpoint mid-epoch with the epoch so far
(``preemption``) and raises ``errors.Stopped``: the entry points connect
SIGTERM and SIGINT to it; a notebook keeps its own signals. The same save
is made every ``save_every_minutes`` within an epoch, for a kill that
gives no warning.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from jax.sharding import Mesh

from rev_nets import data, dispatch, models
from rev_nets.errors import InputError, Stopped
from rev_nets.train import guard, optimizer, preemption, rundir
from rev_nets.train.config import DivergedError, RunConfig, TrainConfig, TrainingError
from rev_nets.train.figures import write_figures
from rev_nets.train.mesh import batch_sharding, data_mesh, replicate
from rev_nets.train.optimizer import create_state, learning_rate_schedule
from rev_nets.train.steps import (
    Metrics,
    eval_step,
    evaluate,
    make_alpha_fit,
    make_epoch_plan,
    make_sampled_plan,
    make_train_step,
    zero_metrics,
)

SAVE_EVERY_MINUTES = 10.0  # A run's save within an epoch: a run killed without warning loses at most this much.

EpochCallback = Callable[[train_state.TrainState, dict[str, Any], list[dict[str, Any]]], None]


def steps_per_epoch(config: TrainConfig, num_train: int, mesh: Mesh, num_unlabelled: int = 0) -> int:
    """Steps per epoch: full batches of the training data, or for a few-label run ``steps / epochs`` (default: the
    full batches of labelled and unlabelled images together). Stops if a batch does not split over the devices, or
    if the run is shorter than its lookahead period."""
    labelled_batch = min(config.batch_size, num_train) if config.num_labels else config.batch_size
    if config.num_labels and num_train != config.num_labels:
        raise TrainingError(
            f"num_labels={config.num_labels} but the training split holds {num_train} labelled examples; pass the "
            "labelled subset (data.label_subset) as train and the other images as unlabelled."
        )
    if config.consistency.enabled and not num_unlabelled:
        raise TrainingError(
            f"consistency={config.consistency.kind!r} needs unlabelled images, and none were given; pass them as "
            "unlabelled, or give fewer num_labels than the training images."
        )
    if labelled_batch > num_train:
        raise TrainingError(
            f"batch_size={config.batch_size} is larger than the {num_train} training examples; give a smaller one."
        )
    sizes = {}
    if labelled_batch == config.batch_size or config.consistency.enabled:
        sizes["batch_size"] = config.batch_size  # The unlabelled batch is batch_size too.
    if labelled_batch != config.batch_size:
        sizes["the labelled batch min(batch_size, num_labels)"] = labelled_batch
    sizes["eval_batch_size"] = config.eval_batch_size
    for name, size in sizes.items():
        if size % mesh.size:
            raise TrainingError(
                f"{name}={size} must be a multiple of the {mesh.size} devices the batch is split over; "
                "round it, or change the device count (use_cpu_devices on CPU)."
            )
    if not config.num_labels:
        per_epoch = num_train // config.batch_size
    elif config.steps:
        per_epoch = config.steps // config.epochs
    else:
        per_epoch = max((num_train + num_unlabelled) // config.batch_size, 1)
    optimizer.check_lookahead(config.lookahead_every, config.epochs * per_epoch)  # before the run writes anything
    return per_epoch


def check_labels(model: models.Model, splits: Mapping[str, Any]) -> None:
    """Stops with one sentence when a split's labels fall outside the model's classes: the loss would be NaN (a
    false divergence) or, with label smoothing, quietly train on targets with no true class."""
    for name, split in splits.items():
        labels = np.asarray(as_split(split).labels)
        if labels.size and (labels.min() < 0 or labels.max() >= model.num_classes):
            raise InputError(
                f"the {name} labels run from {labels.min()} to {labels.max()} but the model has {model.num_classes} "
                f"classes; build it with num_classes={labels.max() + 1} (e.g. --model_args) or pass labels "
                f"0..{model.num_classes - 1}."
            )


def as_split(split) -> data.DeviceSplit:
    """A ``DeviceSplit`` from one or an ``(images, labels)`` pair of arrays (host or device), checked."""
    images, labels = split
    if np.ndim(images) < 2 or np.ndim(labels) != 1 or np.shape(images)[0] != np.shape(labels)[0]:
        raise InputError(
            f"a split is (images, labels) with one label per image, got shapes {np.shape(images)} and "
            f"{np.shape(labels)}; pass images (N, ...) and labels (N,)."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got {labels.dtype}; pass int32 labels.")
    if labels.dtype != np.int32:
        labels = np.asarray(labels, np.int32)
    return data.DeviceSplit(images, labels)


def fit_in_memory(
    model: models.Model,
    config: TrainConfig,
    train: data.DeviceSplit | tuple[Any, Any],
    evals: Mapping[str, data.DeviceSplit | tuple[Any, Any]] | None = None,
    *,
    steps: int | None = None,
    unlabelled: Any = None,
    state: train_state.TrainState | None = None,
    history: list[dict[str, Any]] | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[train_state.TrainState, list[dict[str, Any]]]:
    """Trains ``model`` on ``train`` for ``steps`` steps (default: ``config.epochs`` epochs); returns state and lines.

    ``train`` and each of ``evals`` (name -> split, e.g. "validation",
    "test") are standardised images and integer labels, as a
    ``data.DeviceSplit`` or a pair of arrays. After each epoch (and after a
    last, partial one) every evaluation split is measured and the epoch's
    line (``<name>_error``, ``<name>_synthetic_error``, train means, timing)
    is appended to ``history`` and passed to ``on_epoch(state, line,
    history)``. ``state`` resumes a state already on the mesh (its step
    counts from the start of the run), as ``fit`` does after a restart.

    A few-label config (``num_labels``) takes the labelled subset as
    ``train`` and the other training images as ``unlabelled`` (images only),
    which its consistency loss, if any, uses; its batches are drawn with
    replacement (``make_sampled_plan``).
    """
    config.check(model)
    check_labels(model, {"train": train, **(evals or {})})
    return _train(
        model,
        config,
        train,
        evals,
        steps=steps,
        unlabelled=unlabelled,
        state=state,
        history=history,
        on_epoch=on_epoch,
        watch=guard.Guard(),
    )


def _train(
    model,
    config,
    train,
    evals,
    *,
    steps,
    unlabelled,
    state,
    history,
    on_epoch,
    watch,
    so_far=None,
    stop=None,
    save_every_s=None,
    on_save=None,
):
    """``fit_in_memory`` for a config already checked (``fit`` checks it before touching the run directory);
    ``watch`` stops it with a ``DivergedError`` at a check that finds a blow-up.

    ``fit``'s saves within an epoch: ``so_far`` (a ``preemption.EpochSoFar``
    at ``state``'s step) continues its epoch's sums, seconds and alphas;
    ``on_save(state, so_far)`` saves the epoch so far once ``stop()`` returns
    a reason (then ``Stopped`` is raised) and, between two steps of an epoch,
    once ``save_every_s`` seconds have passed since the last save.
    """
    train = as_split(train)
    evals = {name: as_split(split) for name, split in (evals or {}).items()}
    mesh = data_mesh()
    num_train = int(train.labels.shape[0])
    num_unlabelled = 0 if unlabelled is None else int(np.shape(unlabelled)[0])
    per_epoch = steps_per_epoch(config, num_train, mesh, num_unlabelled)
    last_step = config.epochs * per_epoch if steps is None else steps
    if not 1 <= last_step <= config.epochs * per_epoch:
        raise InputError(
            f"steps={steps} is outside the run's 1..{config.epochs * per_epoch} steps ({config.epochs} epochs of "
            f"{per_epoch}); give fewer steps, or more epochs in the config (the schedule spans its epochs)."
        )
    unlabelled = unlabelled if config.consistency.enabled else None  # Unused without consistency: not copied.
    train, replicated, unlabelled = replicate((train, evals, unlabelled), mesh)
    evals = {name: replicated[name] for name in evals}  # Keep the caller's order (pytrees sort dict keys).
    if state is None:
        state = replicate(create_state(model, config, per_epoch, train.images), mesh)
    history = [] if history is None else history

    step_fn = make_train_step(model, config, mesh, per_epoch)
    epoch_plan = _epoch_plan(mesh, config, num_train, num_unlabelled, per_epoch)
    fits_alpha = config.shadow.enabled and config.shadow.generator.alpha == "data"
    alpha_fit = make_alpha_fit(model, config, mesh) if fits_alpha else None
    eval_on = functools.partial(eval_step, model, config.synthetic_config(model), batch_sharding=batch_sharding(mesh))
    eval_fn = jax.jit(eval_on)
    # Test-time views cost a forward pass each (6 at level 2): judged once, on the trained net, as airbench does.
    views = config.test_time_augmentation
    views_fn = jax.jit(functools.partial(eval_on, views=views, synthetic=False)) if views else None
    batch = min(config.batch_size, num_train) if config.num_labels else config.batch_size  # labelled per step
    if batch < config.batch_size:  # Kept: the few-label grids give one batch size for every label count.
        print(f"note: batch_size={config.batch_size} > {num_train} labels: labelled batches hold {batch}.", flush=True)
    chance_split = "validation" if "validation" in evals else next(iter(evals), None)
    base_key = jax.random.key(config.seed)
    schedule = learning_rate_schedule(config, per_epoch)
    wall = history[-1]["wall_time_s"] if history else 0.0

    window = dispatch.DispatchWindow()
    step = int(state.step)  # Counted on the host from here: reading state.step would wait for the devices.
    while step < last_step:
        epoch = step // per_epoch + 1
        first_row, rows = step % per_epoch, min(per_epoch, last_step - (epoch - 1) * per_epoch)
        order, unlabelled_order, epoch_key = window(epoch_plan(base_key, epoch))
        if so_far is None:
            alpha = window(alpha_fit(state.params, train, order[0])) if alpha_fit else None
            acc, before = replicate(zero_metrics(config), mesh), 0.0
        else:
            alpha, acc = _continued(so_far, config, mesh)
            before, so_far = so_far.train_time_s, None
        start = last_save = time.perf_counter()  # The epoch's start follows its checkpoint (``fit``'s).
        for i in range(first_row, rows):
            reason = stop() if stop else None
            due = save_every_s is not None and i > first_row and time.perf_counter() - last_save >= save_every_s
            if reason or due:
                window.wait()  # The steps dispatched so far are training time, not the save's.
                saving = time.perf_counter()
                if watch.level is not None:  # Else no step has run since the run or its resume began.
                    _checked_means(watch, acc, state.params, epoch, step)
                host_alpha = None if alpha is None else tuple(jax.device_get(alpha))
                on_save(state, preemption.EpochSoFar(step, jax.device_get(acc), before + saving - start, host_alpha))
                if reason:
                    raise Stopped(reason, f"at step {step}")
                last_save = time.perf_counter()
                start += last_save - saving  # The save's seconds are not the epoch's training time.
            state, acc = step_fn(state, acc, train, order, epoch_key, alpha, unlabelled, unlabelled_order)
            window(acc)
            step = (epoch - 1) * per_epoch + i + 1
            logs = (i + 1) % config.log_every == 0 or i + 1 == rows
            if logs or watch.level is None:  # The first step of a run sets its early level.
                means = _checked_means(watch, acc, state.params, epoch, step)
            if logs:
                elapsed = time.perf_counter() - start
                rate = (i + 1 - first_row) * batch / elapsed
                left = (last_step - step) * batch / rate
                print(
                    f"epoch {epoch}/{config.epochs} step {i + 1}/{per_epoch} loss {means['loss']:.4f} "
                    f"train error {means['error_real']:.2%} {rate:,.0f} img/s ETA {_format_eta(left)}",
                    flush=True,
                )
        train_time = before + time.perf_counter() - start
        wall += train_time
        sums = jax.device_get(acc)
        line = {"epoch": epoch, "step": step, "learning_rate": float(schedule(step - 1))}
        line |= {f"train_{name}": value for name, value in _mean_metrics(sums).items()}
        evaluation_start = time.perf_counter()
        for name, split in evals.items():
            result = evaluate(eval_fn, state.params, split, config.eval_batch_size, mesh.size, window)
            line |= {f"{name}_{key}": value for key, value in result.items()}
            if views_fn is not None and step == last_step:
                result = evaluate(views_fn, state.params, split, config.eval_batch_size, mesh.size, window)
                line |= {f"{name}_tta_{key}": value for key, value in result.items()}
        line |= {
            "evaluation_time_s": time.perf_counter() - evaluation_start,
            "epoch_time_s": train_time,
            "wall_time_s": wall,
            "images_per_s": int(sums["steps"]) * batch / train_time,
            "devices": mesh.size,
        }
        history.append(line)
        if on_epoch:
            on_epoch(state, line, history)
        print(_summary(line, evals), flush=True)
        warning = chance_warning(history, model.num_classes, chance_split)
        if warning:
            print(warning, flush=True)
    return state, history


def _continued(so_far: preemption.EpochSoFar, config: TrainConfig, mesh: Mesh):
    """The alphas and the accumulator of the epoch stopped at ``so_far``, on the mesh, in the dtypes the step uses."""
    zero = zero_metrics(config)
    # A restart that turned clipping on counts clipped steps from there: the saved sums have none.
    acc = replicate({name: np.asarray(so_far.sums.get(name, 0), value.dtype) for name, value in zero.items()}, mesh)
    alpha = None if so_far.alpha is None else replicate(tuple(np.asarray(a, np.float32) for a in so_far.alpha), mesh)
    return alpha, acc


def _epoch_plan(mesh: Mesh, config: TrainConfig, num_train: int, num_unlabelled: int, per_epoch: int):
    """``(base_key, epoch) -> (order, unlabelled_order, epoch_key)``: shuffled full epochs, or a few-label run's
    batches drawn with replacement."""
    if config.num_labels:
        return make_sampled_plan(mesh, num_train, num_unlabelled, config, per_epoch)
    full_plan = make_epoch_plan(mesh, num_train, config.batch_size)

    def plan(base_key, epoch):
        order, epoch_key = full_plan(base_key, epoch)
        return order, None, epoch_key

    return plan


def fit(
    model: models.Model,
    config: TrainConfig,
    train: data.DeviceSplit,
    evals: dict[str, data.DeviceSplit],
    workdir: str,
    *,
    extra_config: dict[str, Any] | None = None,
    figures: bool = True,
    unlabelled: Any = None,
    stop: Callable[[], Any] | None = None,
    save_every_minutes: float | None = SAVE_EVERY_MINUTES,
) -> tuple[train_state.TrainState, list[dict[str, Any]]]:
    """``fit_in_memory`` for ``config.epochs`` epochs, in (or resumed from) the run directory ``workdir``.

    Writes ``config.json`` (or checks it against the saved one, and notes
    a resume of an unfinished run there: its step, code and time), the step-0
    checkpoint, and per epoch a ``metrics.jsonl`` line, TensorBoard scalars
    (with tensorboardX), a checkpoint and the figures. Returns the final
    state and every metric line of the run.

    ``stop`` is polled before each step; once it returns a reason (e.g. the
    ``signal.Signals`` an entry point received), the run saves a checkpoint
    and its epoch so far, and raises ``errors.Stopped``: the same call
    resumes it to the numbers of an uninterrupted run. The same save is
    made within an epoch every ``save_every_minutes`` (None: only at epoch
    ends), so that a run killed without warning (SIGKILL, a lost machine)
    loses at most those minutes of training (and the epoch-end evaluation
    under way).

    A checkpoint is saved only once its state passed the divergence guard,
    with its checksum in ``checkpoints.json``; a resume takes the newest
    checkpoint that restores intact. A blow-up marks the run ``DIVERGED``
    (step, epoch, cause) and stops; the run then resumes from its last
    sane checkpoint only with another ``grad_clip`` or ``learning_rate``,
    recorded in config.json's ``restarts``.
    """
    config.check(model)
    check_labels(model, {"train": train, **evals})
    if save_every_minutes is not None and not save_every_minutes > 0:
        raise InputError(
            f"save_every_minutes={save_every_minutes} is not a duration; give minutes > 0, or None to save only "
            "at the end of each epoch."
        )
    mesh = data_mesh()
    num_unlabelled = 0 if unlabelled is None else int(np.shape(unlabelled)[0])
    per_epoch = steps_per_epoch(config, int(train.labels.shape[0]), mesh, num_unlabelled)
    config_record = {"train": config.to_json(), **rundir.model_record(model), **(extra_config or {})}
    mark = rundir.diverged(workdir)
    code = rundir.code_version()
    changed = rundir.check_config(workdir, config_record | {rundir.PROVENANCE: code}, mark)
    state = replicate(create_state(model, config, per_epoch, train.images), mesh)
    manager = rundir.checkpoint_manager(workdir, per_epoch)
    level, _ = rundir.read_checks(workdir)
    watch = guard.Guard(level)
    history: list[dict[str, Any]] = []
    so_far = None
    if manager.latest_step() is None:
        _save(manager, workdir, state, _sane_on_host(state, epoch=0), watch)
    else:
        # Gradient clipping adds a part to the optimizer's chain: a checkpoint saved before a restart changed it
        # restores into the other structure.
        unclipped = dataclasses.replace(config, grad_clip=0.0 if config.grad_clip else 1.0)
        state, note = _resume(manager, workdir, state, replicate(create_state(model, unclipped, per_epoch), mesh))
        history = rundir.truncate_metrics(workdir, int(state.step))
        so_far = preemption.load(workdir, int(state.step))
        print(f"resumed {workdir} at step {int(state.step)} (epoch {int(state.step) // per_epoch}){note}", flush=True)
        if int(state.step) < config.epochs * per_epoch:  # Else the run is complete and nothing resumes.
            rundir.record_resume(workdir, int(state.step), code)
        if mark is not None:
            rundir.record_restart(workdir, int(state.step), changed, mark)
    writer = rundir.tensorboard_writer(workdir, purge_step=int(state.step) + 1)

    def record(state, line, history):
        host = _sane_on_host(state, epoch=line["epoch"])  # Before anything of the epoch is written.
        rundir.append_metrics(workdir, line)
        if writer:
            rundir.write_scalars(writer, line)
        _save(manager, workdir, state, host, watch)
        if figures:
            write_figures(model, config, state.params, evals, history, workdir)

    def save_so_far(state, so_far):
        if manager.latest_step() != so_far.step:  # Else nothing was trained since the last save.
            host = _sane_on_host(state, epoch=so_far.step // per_epoch + 1)
            preemption.save(workdir, so_far, manager.all_steps())
            _save(manager, workdir, state, host, watch)

    try:
        state, history = _train(
            model,
            config,
            train,
            evals,
            steps=None,
            unlabelled=unlabelled,
            state=state,
            history=history,
            on_epoch=record,
            watch=watch,
            so_far=so_far,
            stop=stop,
            save_every_s=None if save_every_minutes is None else 60.0 * save_every_minutes,
            on_save=save_so_far,
        )
    except DivergedError as error:
        mark = error.record | {"last_sane_step": _drop_saves_within_the_epoch(manager, per_epoch)}
        rundir.mark_diverged(workdir, mark)
        raise DivergedError(
            f"by step {mark['step']} (epoch {mark['epoch']}) {mark['cause']}; {workdir} keeps its last sane "
            f"checkpoint (step {mark['last_sane_step']}) and is marked {rundir.DIVERGED}: train it again with "
            "grad_clip set or a lower learning_rate to resume from there, or in a new run directory for any other "
            "change (e.g. warmup_epochs).",
            mark,
        ) from None
    finally:
        manager.wait_until_finished()
        if writer:
            writer.close()
    return state, history


def _drop_saves_within_the_epoch(manager: ocp.CheckpointManager, per_epoch: int) -> int:
    """Deletes the checkpoints saved since the latest epoch's end and returns that end's step: the guard catches a
    blow-up late, so the states of the epoch that blew up are suspect (a restart from one of them with clipping
    still diverged, ``tests/test_run_safety.py``), and a diverged run restarts where an epoch ended."""
    last_end = max(step for step in manager.all_steps() if step % per_epoch == 0)  # Step 0 is always kept.
    for step in manager.all_steps():
        if step > last_end:
            manager.delete(step)
    return last_end


def _sane_on_host(state: train_state.TrainState, epoch: int) -> train_state.TrainState:
    """``state`` on the host, once every value in it (the optimizer's too) is found finite; else a
    ``DivergedError``, so that no part of the epoch is written."""
    host, step = jax.device_get(state), int(state.step)
    problem = guard.problem(host, None)
    if problem:
        cause = f"the state {problem}"
        raise DivergedError(f"by step {step} {cause}", {"step": step, "epoch": epoch, "cause": cause})
    return host


def _save(
    manager: ocp.CheckpointManager, workdir: str, state: train_state.TrainState, host: Any, watch: guard.Guard
) -> None:
    """Saves ``state`` as the checkpoint of its step, its checksum (of ``host``, the state on the host) and the
    run's early level recorded first, so that every checkpoint on disk has its checksum."""
    step = int(state.step)
    rundir.record_checkpoint(workdir, step, guard.digest(host), watch.level, manager.all_steps())
    manager.save(step, args=ocp.args.StandardSave(state))


def _resume(
    manager: ocp.CheckpointManager, workdir: str, fresh: train_state.TrainState, other: train_state.TrainState
) -> tuple[train_state.TrainState, str]:
    """The newest checkpoint that restores intact, into ``fresh`` (the state as configured) or else ``other`` (the
    optimizer's other structure), carried into ``fresh``; and a note on the newer ones it skipped (removed, so that
    the run saves those steps again)."""
    _, digests = rundir.read_checks(workdir)
    step, restored, skipped = guard.newest_intact(
        manager.all_steps(),
        lambda at: _restore_either(manager, at, fresh, other),
        lambda at, tree: guard.problem(tree, digests.get(at)),
    )
    if step is None:
        raise TrainingError(
            f"no checkpoint in {workdir} restores intact ({'; '.join(skipped)}); start a new run directory."
        )
    for newer in [saved for saved in manager.all_steps() if saved > step]:
        manager.delete(newer)
    note = f", its newest intact checkpoint; skipped and removed: {'; '.join(skipped)}" if skipped else ""
    # A restart that turned clipping on or off adds or drops the chain's first part, which holds no state.
    extra = len(restored.opt_state) - len(fresh.opt_state)
    opt_state = (*fresh.opt_state[: max(0, -extra)], *restored.opt_state[max(0, extra) :])
    return fresh.replace(step=restored.step, params=restored.params, opt_state=opt_state), note


def _restore_either(manager: ocp.CheckpointManager, step: int, first: Any, second: Any) -> Any:
    """The checkpoint of ``step`` restored into ``first``, or into ``second`` where its structure differs; the
    first error where neither restores (a damaged folder)."""
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(first))
    except ValueError as error:
        try:
            return manager.restore(step, args=ocp.args.StandardRestore(second))
        except ValueError:
            raise error from None


def train_and_evaluate(
    config: RunConfig,
    workdir: str,
    *,
    data_dir: str | None = None,
    figures: bool = True,
    stop: Callable[[], Any] | None = None,
    save_every_minutes: float | None = SAVE_EVERY_MINUTES,
) -> tuple[train_state.TrainState, list[dict[str, Any]]]:
    """``fit`` of the model ``config.model`` builds on the dataset ``config.dataset``: its training portion, and
    its validation (``config.num_validation`` images held out of train; 0: none) and test splits, standardised
    with the whole training portion's statistics.

    With ``config.train.num_labels`` the training portion is split into a
    balanced labelled subset drawn with the seed (its indices into the
    training portion go into ``config.json``) and the unlabelled rest.
    ``config.json`` records the splits' fingerprint (``data.fingerprint``):
    a resume on other data is refused. ``stop`` and ``save_every_minutes``
    are ``fit``'s.
    """
    model, settings = models.build_model(config.model), config.train
    splits, (mean, std) = data.experiment_splits(config.dataset, config.num_validation, data.resolve_data_dir(data_dir))
    extra = {"dataset": config.dataset, "num_validation": config.num_validation, rundir.DATA: data.fingerprint(splits)}
    unlabelled = None
    if settings.num_labels:
        num_classes = len(splits["train"].class_names)
        indices = data.label_subset(splits["train"].labels, settings.num_labels, num_classes, settings.seed)
        splits["train"], unlabelled_images = data.split_labels(splits["train"], indices)
        # Without consistency the unlabelled images only set the default length: not standardised onto a device.
        consistency = settings.consistency.enabled
        unlabelled = data.standardize(unlabelled_images, mean, std) if consistency else unlabelled_images
        extra["labelled_indices"] = indices.tolist()
    device = {name: data.to_device(split, mean, std) for name, split in splits.items()}
    train, evals = device.pop("train"), device
    return fit(
        model,
        settings,
        train,
        evals,
        workdir,
        extra_config=extra,
        figures=figures,
        unlabelled=unlabelled,
        stop=stop,
        save_every_minutes=save_every_minutes,
    )


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _mean_metrics(acc: Metrics) -> dict[str, float]:
    host = jax.device_get(acc)
    steps = max(int(host["steps"]), 1)
    return {name: float(value) / steps for name, value in host.items() if name not in ("steps", "finite")}


def _checked_means(watch: guard.Guard, acc: Metrics, params: Any, epoch: int, step: int) -> dict[str, float]:
    """The accumulator's means, once ``watch`` has found the loss and the params sane; else a ``DivergedError``."""
    host, norm = jax.device_get((acc, _global_norm(params)))  # One wait for the accumulator and the norm together.
    means = _mean_metrics(host)
    loss = means["loss"] if bool(host["finite"]) else math.nan
    cause = watch.cause(loss, float(norm))
    if cause:
        record = {"step": step, "epoch": epoch, "cause": cause}
        raise DivergedError(f"by step {step} (epoch {epoch}) {cause}; {IN_MEMORY_HINT}.", record)
    return means


IN_MEMORY_HINT = "set grad_clip or a lower learning_rate (or warmup_epochs) and train again"
_global_norm = jax.jit(optax.tree.norm)


CHANCE_ROUNDS = 3  # Evaluations in a row at chance before the warning.
CHANCE_MARGIN = 0.02  # An error within this of chance's counts as chance.


def chance_warning(history: list[dict[str, Any]], num_classes: int, split: str | None) -> str | None:
    """One warning line when ``split``'s error has sat at chance for the last ``CHANCE_ROUNDS`` evaluations, the first
    time it does: a model that does not learn is no error (it may be the point), but should not pass unnoticed."""
    if split is None or not history:
        return None
    chance, streak, reached = 1 - 1 / num_classes, 0, []
    for line in history:
        streak = streak + 1 if line[f"{split}_error"] >= chance - CHANCE_MARGIN else 0
        reached.append(streak >= CHANCE_ROUNDS)
    if not reached[-1] or reached.index(True) != len(reached) - 1:
        return None
    stuck = f"warning: {split} error has stayed at chance ({chance:.0%} for {num_classes} classes) for {CHANCE_ROUNDS} evaluations"
    train_error = history[-1].get("train_error_real")
    if train_error is not None and train_error < chance / 2:
        return (
            f"{stuck} while the training error is {train_error:.0%}: the model learns its training batches but "
            f"not the {split} images; likely they differ from the training images (another source, another "
            "preprocessing, labels that do not match), or BatchNorm's running averages have not yet settled."
        )
    return (
        f"{stuck}: the model is not learning; likely too small a model (width, channels), too low or too high a "
        "learning rate, or too few labels or steps."
    )


def _summary(line: dict[str, Any], evals) -> str:
    parts = [f"epoch {line['epoch']}:"]
    for name in evals:
        views = f"{line[f'{name}_tta_error']:.2%} with test-time augmentation; " if f"{name}_tta_error" in line else ""
        parts.append(
            f"{name} error {line[f'{name}_error']:.2%} ({views}synthetic {line[f'{name}_synthetic_error']:.2%})"
        )
    parts.append(f"{line['epoch_time_s']:.0f}s (evaluation {line['evaluation_time_s']:.0f}s)")
    return " ".join(parts)
