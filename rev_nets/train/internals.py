"""The fit loop's parts, for benchmarks and tests that time or check one of them: not the public API.

A notebook trains through ``rev_nets.fit_in_memory`` / ``fit`` /
``train_and_evaluate``; a benchmark that times one jitted step, or a test
that checks the mesh or the epoch plan, imports these from here, the one
place they are named. They may change without notice.
"""

from rev_nets.train.loop import steps_per_epoch
from rev_nets.train.mesh import batch_sharding, data_mesh, replicate, shard_batch
from rev_nets.train.optimizer import create_state, learning_rate_schedule, make_optimizer
from rev_nets.train.rundir import check_config, checkpoint_manager
from rev_nets.train.steps import eval_step, evaluate, make_epoch_plan, make_train_step, train_step, zero_metrics

__all__ = [
    "batch_sharding",
    "check_config",
    "checkpoint_manager",
    "create_state",
    "data_mesh",
    "eval_step",
    "evaluate",
    "learning_rate_schedule",
    "make_epoch_plan",
    "make_optimizer",
    "make_train_step",
    "replicate",
    "shard_batch",
    "steps_per_epoch",
    "train_step",
    "zero_metrics",
]
