"""What every entry point shares: one-sentence errors instead of tracebacks, a saved stop on SIGTERM and SIGINT, and
flags that name fields of a record."""

from __future__ import annotations

import dataclasses
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from absl import app, flags, logging

from rev_nets.errors import EXIT_DIVERGED, EXIT_STOPPED, EXIT_USER_ERROR, SettingError, Stopped, UserError
from rev_nets.train import DivergedError, RunConfig, config_field

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


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)``, turning user errors into one line on stderr and their exit code, and a saved stop
    (``Stopped``) into one line and ``EXIT_STOPPED``."""

    def guarded(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)  # JAX's backend probing is noise to a user.
        try:
            main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_DIVERGED if isinstance(error, DivergedError) else EXIT_USER_ERROR)
        except Stopped as stopped:
            print(f"{stopped}; saved; run the same command to resume", file=sys.stderr)
            sys.exit(EXIT_STOPPED)

    app.run(guarded)


def stop_on_signals() -> Callable[[], signal.Signals | None]:
    """Records the first SIGTERM or SIGINT instead of ending the process; returns the poll of it (None until then).

    For the entry points that pass it to the library as ``stop``: a run
    saves at its next step boundary, a grid forwards the signal to its run.
    Later signals are ignored, so that a run signalled twice (by a terminal's
    Ctrl-C and a grid's forwarding) still saves; SIGKILL ends it at once.
    """
    received: list[signal.Signals] = []

    def record(number: int, frame) -> None:
        del frame
        received.append(signal.Signals(number))

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, record)
    return lambda: received[0] if received else None


@dataclasses.dataclass(frozen=True)
class Flag:
    """A flag and the record field it sets: ``parse`` reads its typed text (absl has parsed numbers and lists
    already), ``show`` writes a field value as the flag's text."""

    name: str
    path: str
    help: str
    choices: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None
    show: Callable[[Any], str] | None = None


def _text(row: Flag, value: Any) -> Any:
    """A field value as absl holds the flag's value: shown text, a list of strings, or the value itself."""
    if row.show:
        return row.show(value)
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    return value


def _definer(row: Flag, value: Any):
    if row.show or row.choices or isinstance(value, str) or value is None:
        return flags.DEFINE_string
    if isinstance(value, (tuple, list)):
        return flags.DEFINE_list
    return {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}[type(value)]


def define(rows: Iterable[Flag], config: RunConfig, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines each row's flag (once per process: entry points share rows), showing ``config``'s values as
    the defaults, so ``--help`` tells the entry point's real settings."""
    for row in rows:
        value = config_field(config, row.path)
        if row.name not in flag_values:
            help_text = f"{row.help} One of {'|'.join(row.choices)}." if row.choices else row.help
            _definer(row, value)(row.name, _text(row, value), help_text, flag_values=flag_values)
        flag_values.set_default(row.name, _text(row, value))


def typed(rows: Iterable[Flag], flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, Any]:
    """The fields the flags typed on the command line set, by config path."""
    found = {}
    for row in rows:
        if flag_values[row.name].present:
            value = flag_values[row.name].value
            if row.choices and value not in row.choices:  # Checked here, so that it exits as any bad value does.
                raise SettingError(row.path, f"must be one of {', '.join(row.choices)}, got {value!r}.")
            found[row.path] = row.parse(value) if row.parse else value
    return found


def row_of(rows: Iterable[Flag], path: str) -> Flag | None:
    """The row whose flag sets the field at ``path``, if any."""
    return next((row for row in rows if row.path == path), None)


def command_line(rows: Iterable[Flag], overrides: Mapping[str, Any]) -> list[str]:
    """``overrides`` (config path -> value) as the flags of ``rows``, in the given order: a sweep cell's command."""
    rows = tuple(rows)
    line = []
    for path, value in overrides.items():
        row = row_of(rows, path)
        if row is None:
            raise SettingError(path, "has no flag on this entry point; add a row to experiments.settings.")
        if isinstance(value, bool) and not row.show:
            line.append(f"--{row.name}" if value else f"--no{row.name}")
        else:
            text = _text(row, value)
            text = ",".join(text) if isinstance(text, list) else f"{text:g}" if isinstance(text, float) else text
            line.append(f"--{row.name}={text}")
    return line


def message(rows: Iterable[Flag], error: SettingError) -> str:
    """A library ``SettingError`` in the flags' words."""
    row = row_of(rows, error.setting)
    return f"--{row.name} {error.problem}" if row else str(error)
