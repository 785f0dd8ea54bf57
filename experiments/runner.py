"""The one runner behind ``experiments.mnist``, ``experiments.cifar10`` and ``experiments.cifar100``.

Each entry point gives its config (``experiments/configs``) and the flag rows
of its own model arguments; the flags the user typed override that record,
which is checked before any work, then ``rev_nets.train.train_and_evaluate``
trains (or resumes) the run. SIGTERM or SIGINT saves the run at its next
step boundary and exits with ``errors.EXIT_STOPPED``; the same command
resumes it, as it does a run killed without warning from its last save
(every ``--save_every_minutes`` within an epoch). ``--model=package.module:factory`` (with
``--model_args``) trains another model, e.g. a Flax NNX module.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

from absl import flags

from experiments import cli, settings
from rev_nets import data, errors, models, train

FLAGS = flags.FLAGS
cli.shared_flag(
    flags.DEFINE_string,
    "data_dir",
    None,
    f"Folder with the original dataset files; else ${data.DATA_DIR_ENV}; else TFDS.",
)
cli.shared_flag(
    flags.DEFINE_string,
    "workdir",
    None,
    "Run directory (config.json, metrics.jsonl, checkpoints/, figures/); resumed if it exists.",
)

_SAVE_EVERY_MINUTES = flags.DEFINE_float(
    "save_every_minutes",
    train.SAVE_EVERY_MINUTES,
    "Minutes between saves within an epoch (each epoch's end saves too): what a run killed without warning loses; "
    "0: only at epoch ends.",
    lower_bound=0.0,
)


def configured(config: train.RunConfig, typed: dict) -> train.RunConfig:
    """``config`` with the typed flags' fields; another ``model.factory`` starts from no arguments, and the
    built-in net's own argument flags (``--channels``) do not apply to it."""
    factory = typed.pop("model.factory", config.model.factory)
    if factory != config.model.factory:
        own = [path for path in typed if path.startswith("model.arguments.")]
        if own:
            raise errors.SettingError(own[0], f"is an argument of {config.model.factory}; give model.arguments.")
        config = train.override(config, {"model": models.ModelConfig(factory, {})})
    return train.override(config, typed)


def default_workdir(config: train.RunConfig, default: train.RunConfig) -> str:
    """``~/rev_nets_runs/<dataset>/<arm>_seed<seed>``, the arm prefixed by the model when it is not the entry
    point's default or not one of ``rev_nets.nets`` (the airbench net's runs and the small CNN's, both CIFAR-10,
    keep apart)."""
    t = config.train
    arm = f"shadow_h{t.shadow.layer}" if t.shadow.enabled else "backprop"
    if t.consistency.enabled:
        arm += f"_consistency_{t.consistency.kind}"
    if t.num_labels:
        arm = f"labels{t.num_labels}_{arm}"
    if config.model.factory != default.model.factory or not config.model.factory.startswith("rev_nets.nets:"):
        arm = f"{config.model.factory.rpartition(':')[2]}_{arm}"
    return os.path.join(os.path.expanduser("~"), "rev_nets_runs", config.dataset, f"{arm}_seed{t.seed}")


def main(default: train.RunConfig, rows: Sequence[cli.Flag]) -> None:
    """Checks every flag against the record, then trains (or resumes) one run, saving it on SIGTERM or SIGINT."""
    try:
        config = configured(default, cli.typed(rows))
        train.use_cpu_devices(config.cpu_devices)  # Before anything starts a JAX backend.
        with errors.setting_scope("model"):
            model = models.build_model(config.model)
        config.check(model)
    except errors.SettingError as error:
        raise cli.UsageError(cli.message(rows, error)) from None
    workdir = cli.workdir(default_workdir(config, default) if FLAGS.workdir is None else FLAGS.workdir)
    if FLAGS.data_dir:
        cli.existing(FLAGS.data_dir, "data_dir")
    print(
        f"{config.dataset}: {train.arm_name(config.train)}, {models.param_count(model):,} params -> {workdir}",
        flush=True,
    )
    train.train_and_evaluate(
        config,
        workdir,
        data_dir=FLAGS.data_dir,
        stop=cli.stop_on_signals(),
        save_every_minutes=_SAVE_EVERY_MINUTES.value or None,
    )


@dataclasses.dataclass(frozen=True)
class Entry:
    """An entry point: its record and the rows of its flags."""

    default: train.RunConfig
    rows: tuple[cli.Flag, ...]


def define(get_config: Callable[[], train.RunConfig], own_rows: Sequence[cli.Flag] = ()) -> Entry:
    """Defines the training flags and ``own_rows`` over ``get_config()``, listed by ``--help``."""
    entry = Entry(get_config(), (*settings.TRAINING, *own_rows))
    cli.define(entry.rows, entry.default)
    for row in entry.rows:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[row.name])
    return entry


def run(entry: Entry) -> None:
    """Entry point: parses the flags, then ``main``."""
    cli.run(lambda argv: main(entry.default, entry.rows))
