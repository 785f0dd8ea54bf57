"""What every entry point shares: one-sentence errors instead of tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, logging

from rev_nets.data import DataError
from rev_nets.train import TrainingError


class UsageError(ValueError):
    """A flag value that makes no sense; the message names the flag and the fix."""


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)``, turning user errors into one line on stderr and exit code 2."""

    def guarded(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)  # JAX's backend probing is noise to a user.
        try:
            main(argv)
        except (DataError, UsageError, TrainingError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
