"""Training: settings, the optimizer, the mesh, the jitted steps, the fit loop, the run directory, figures.

Modules, one concern each: ``config`` (``TrainConfig`` and the errors that
stop a run), ``optimizer``, ``mesh``, ``steps`` (train step and
evaluation), ``loop`` (``fit_in_memory`` from arrays; ``fit`` in a run
directory), ``rundir`` (config.json, metrics.jsonl, checkpoints, ``load_run``:
reading a run back) and ``figures``. The names below are the public API.
"""

from rev_nets.train.config import DivergedError, RunConfig, TrainConfig, TrainingError, config_field, override
from rev_nets.train.figures import arm_name, write_figures
from rev_nets.train.loop import fit, fit_in_memory, steps_per_epoch, train_and_evaluate
from rev_nets.train.mesh import batch_sharding, data_mesh, replicate, shard_batch, use_cpu_devices
from rev_nets.train.optimizer import create_state, learning_rate_schedule, make_optimizer
from rev_nets.train.rundir import Run, check_config, checkpoint_manager, load_run, read_metrics
from rev_nets.train.steps import (
    eval_step,
    evaluate,
    make_epoch_plan,
    make_train_step,
    train_step,
    zero_metrics,
)

__all__ = [
    "DivergedError",
    "Run",
    "RunConfig",
    "TrainConfig",
    "TrainingError",
    "arm_name",
    "batch_sharding",
    "check_config",
    "checkpoint_manager",
    "config_field",
    "create_state",
    "data_mesh",
    "eval_step",
    "evaluate",
    "fit",
    "fit_in_memory",
    "learning_rate_schedule",
    "load_run",
    "make_epoch_plan",
    "make_optimizer",
    "make_train_step",
    "override",
    "read_metrics",
    "replicate",
    "shard_batch",
    "steps_per_epoch",
    "train_and_evaluate",
    "train_step",
    "use_cpu_devices",
    "write_figures",
    "zero_metrics",
]
