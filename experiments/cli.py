"""What every entry point shares: one-sentence errors instead of tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging

from rev_nets.errors import EXIT_DIVERGED, EXIT_USER_ERROR, SettingError, UserError
from rev_nets.train import DivergedError

SHARED_FLAGS = ("seed", "data_dir", "workdir", "dataset", "grid", "model", "few_labels")


def shared_flag(define, name: str, default, help_text: str, **kwargs) -> flags.FlagHolder:
    """``define(name, default, help_text)``, or the holder of the flag another experiment module defined already.

    absl allows one definition of a name per process; several experiment modules
    (each run alone from the command line, imported together by the tests) use
    the names in ``SHARED_FLAGS``.
    """
    if name not in SHARED_FLAGS:
        raise ValueError(f"{name!r} is not one of the shared flags {SHARED_FLAGS}.")
    if name in flags.FLAGS:
        return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
    return define(name, default, help=help_text, **kwargs)


class UsageError(UserError, ValueError):
    """A flag value that makes no sense; the message names the flag and the fix."""


def flag_message(error: Exception) -> str:
    """``error``'s sentence, with a ``SettingError``'s config path (relative to ``TrainConfig``) swapped for the flag
    that sets it: "shadow.generator.rho must be ..." -> "--sampling_rho must be ..."."""
    renamed = {
        "shadow.layer": "shadow_layer",
        "shadow.weight": "shadow_weight",
        "shadow.start_epoch": "shadow_start_epoch",
        "shadow.noise_twin": "noise_twin",
        "shadow.generator.rho": "sampling_rho",
        "shadow.generator.alpha": "alpha",
        "shadow.generator.alpha_scale": "alpha_scale",
        "shadow.generator.smooth_sigma": "smooth_sigma",
        "consistency.kind": "consistency",
        "consistency.layer": "consistency_layer",
        "consistency.weight": "consistency_weight",
        "consistency.sigma": "consistency_sigma",
    }  # Paths not listed are their flag's name ("learning_rate"), or have no flag and stay as they are.
    if not isinstance(error, SettingError):
        return str(error)
    flag = renamed.get(error.setting, error.setting)
    return f"--{flag} {error.problem}" if flag in flags.FLAGS else str(error)


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)``, turning user errors into one line on stderr and their exit code."""

    def guarded(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)  # JAX's backend probing is noise to a user.
        try:
            main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_DIVERGED if isinstance(error, DivergedError) else EXIT_USER_ERROR)

    app.run(guarded)
