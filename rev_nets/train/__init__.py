"""Training: a run's record, the fit loop (in memory or in a run directory), and reading a run back.

Modules, one concern each: ``config`` (``TrainConfig``, ``RunConfig``, the
errors that stop a run), ``optimizer``, ``mesh``, ``steps`` (train step and
evaluation), ``loop`` (``fit_in_memory`` from arrays; ``fit`` in a run
directory; ``train_and_evaluate`` from a ``RunConfig``), ``rundir``
(config.json, metrics.jsonl, checkpoints, ``load_run``) and ``figures``.
The names below are the public API; the loop's parts, for benchmarks and
tests, are in ``rev_nets.train.internals``.
"""

from rev_nets.train.config import DivergedError, RunConfig, TrainConfig, TrainingError, config_field, override
from rev_nets.train.figures import arm_name
from rev_nets.train.loop import SAVE_EVERY_MINUTES, fit, fit_in_memory, train_and_evaluate
from rev_nets.train.mesh import use_cpu_devices
from rev_nets.train.rundir import Run, load_run, read_metrics

__all__ = [
    "SAVE_EVERY_MINUTES",
    "DivergedError",
    "Run",
    "RunConfig",
    "TrainConfig",
    "TrainingError",
    "arm_name",
    "config_field",
    "fit",
    "fit_in_memory",
    "load_run",
    "override",
    "read_metrics",
    "train_and_evaluate",
    "use_cpu_devices",
]
