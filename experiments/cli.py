"""What every entry point shares: one-sentence errors instead of tracebacks, a saved stop on SIGTERM and SIGINT, and
flags that name fields of a record."""

from __future__ import annotations

import dataclasses
import os
import re
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


def _guarded(call: Callable, *args) -> Any:
    """``call(*args)``, a user error printed as one line on stderr and exiting with its code."""
    try:
        return call(*args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED if isinstance(error, DivergedError) else EXIT_USER_ERROR)
    except Stopped as stopped:
        print(f"{stopped}; saved; run the same command to resume", file=sys.stderr)
        sys.exit(EXIT_STOPPED)


def run(main: Callable[[list[str]], None]) -> None:
    """``absl.app.run(main)``, turning user errors (a bad flag value as absl parses it, too) into one line on
    stderr and their exit code, and a saved stop (``Stopped``) into one line and ``EXIT_STOPPED``."""

    def guarded(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)  # JAX's backend probing is noise to a user.
        _guarded(main, argv)

    app.run(guarded, flags_parser=lambda argv: _guarded(parse, argv))


_BAD_VALUE = re.compile(r"flag --(\w+)=(.*?): ", re.DOTALL)


def parse(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """absl's parse of ``argv``; a value absl refuses (not a number, out of its bounds) or an unknown flag is a
    ``UsageError`` naming the flag and what it takes."""
    try:
        return flag_values(argv)
    except flags.UnrecognizedFlagError as error:
        guess = re.search(r"Did you mean: (.*?) \?$", str(error))
        hint = f" (did you mean --{', --'.join(guess[1].split(', '))}?)" if guess else ""
        raise UsageError(f"--{error.flagname} is not a flag of this command{hint}; see --helpshort.") from None
    except (flags.Error, ValueError) as error:  # absl raises a plain ValueError for --noflag=value.
        found = _BAD_VALUE.match(str(error))
        if found and found[1] in flag_values:
            raise UsageError(f"--{found[1]} must be {_takes(flag_values[found[1]])}, got {found[2]!r}.") from None
        raise UsageError(f"{str(error).rstrip('.')}; see --helpshort.") from None


def _takes(flag: flags.Flag) -> str:
    """What a flag's absl parser accepts, in words: "a whole number >= 50", "one of auto, torch"."""
    parser = flag.parser
    if isinstance(parser, flags.EnumParser):
        return f"one of {', '.join(parser.enum_values)}"
    if isinstance(parser, flags.BooleanParser):
        return "true or false"
    kind = "a whole number" if isinstance(parser, flags.IntegerParser) else "a number"
    lower, upper = getattr(parser, "lower_bound", None), getattr(parser, "upper_bound", None)
    bounds = ([f">= {lower}"] if lower is not None else []) + ([f"<= {upper}"] if upper is not None else [])
    return " ".join([kind, *bounds])


def workdir(path: str, flag: str = "workdir") -> str:
    """``path`` with ``~`` expanded, once a folder and a file could be made there (``UsageError`` naming ``--flag``
    otherwise: a file, a read-only place), so that a run that cannot write stops before any work; the probe leaves
    nothing behind."""
    if not path:
        raise UsageError(f"--{flag} is empty; give a folder.")
    expanded = os.path.expanduser(path)
    full = existing = os.path.abspath(expanded)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == full else f"lies under {existing}, which is a file"
        raise UsageError(f"--{flag} {expanded} {where}, not a folder; give a folder.")
    probe = os.path.join(full, f".write_probe_{os.getpid()}")
    try:
        os.makedirs(full, exist_ok=True)
        open(probe, "w").close()
    except OSError as error:
        raise UsageError(
            f"--{flag} {expanded} cannot be written ({error.strerror}); give a folder you can write."
        ) from None
    finally:
        _remove_probe(probe, existing)
    return expanded


def _remove_probe(probe: str, existing: str) -> None:
    """Removes ``probe`` and the folders above it that the probe made, up to ``existing`` (which was there)."""
    if os.path.exists(probe):
        os.remove(probe)
    made = os.path.dirname(probe)
    while made != existing:
        if os.path.isdir(made):
            os.rmdir(made)
        made = os.path.dirname(made)


def existing(path: str, flag: str, kind: str = "folder") -> str:
    """``path`` with ``~`` expanded, once it is an existing folder (or file: ``kind="file"``); a ``UsageError``
    naming ``--flag`` otherwise."""
    expanded = os.path.expanduser(path)
    if not (os.path.isdir(expanded) if kind == "folder" else os.path.isfile(expanded)):
        raise UsageError(f"--{flag} {expanded} does not exist or is not a {kind}; give an existing {kind}.")
    return expanded


def checked(flag: str, check: Callable, *args) -> Any:
    """``check(*args)``, a user error it raises named by ``--flag``: a library check of a flag's value run before
    the work that would reach it."""
    try:
        return check(*args)
    except SettingError as error:
        raise UsageError(f"--{flag} {error.problem}") from None
    except UserError as error:
        raise UsageError(f"--{flag}: {error}") from None


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
