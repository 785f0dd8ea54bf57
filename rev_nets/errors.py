"""Errors a user can cause: each message is one sentence naming the cause and the fix.

Entry points print such an error in one line instead of a traceback and exit
with ``EXIT_USER_ERROR``; a run that diverged exits with ``EXIT_DIVERGED``;
a run or grid stopped on request (``Stopped``) after saving exits with ``EXIT_STOPPED``.
"""

import contextlib
from collections.abc import Iterator

EXIT_USER_ERROR = 2  # A flag value, data or a changed config this project refuses: fix the command.
EXIT_DIVERGED = 3  # A non-finite or exploding loss or params: the same command would diverge again.
EXIT_STOPPED = 4  # Stopped by SIGTERM or SIGINT after saving: the same command resumes.


class UserError(Exception):
    """A problem the user can fix (a setting, a file, a run directory); the message says how."""


class InputError(UserError, ValueError):
    """An argument or file given to an analysis that it cannot use (a missing file, a malformed spec)."""


class SettingError(UserError, ValueError):
    """A setting whose value makes no sense; ``setting`` is its config name (a dotted path), ``problem`` the rest.

    The message is ``f"{setting} {problem}"``, e.g. "rho must be in (0, 1] (1 = no sampling), got 2.": an entry
    point can swap the config name for the flag that sets it.
    """

    def __init__(self, setting: str, problem: str):
        super().__init__(setting, problem)  # Both in args, so that the error pickles.
        self.setting = setting
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.setting} {self.problem}"


class Stopped(Exception):
    """A run or a grid that stopped on request after saving, so that the same call resumes it; ``reason`` is what
    its stop poll returned (a ``signal.Signals`` reads as its name), ``where`` the step or run it stopped at."""

    def __init__(self, reason, where: str):
        super().__init__(reason, where)  # Both in args, so that the error pickles.
        self.reason = reason
        self.where = where

    def __str__(self) -> str:
        return f"stopped by {getattr(self.reason, 'name', self.reason)} {self.where}"


@contextlib.contextmanager
def setting_scope(prefix: str) -> Iterator[None]:
    """Re-raises a ``SettingError`` from inside as the setting ``f"{prefix}.{setting}"`` of an enclosing record."""
    try:
        yield
    except SettingError as error:
        raise SettingError(f"{prefix}.{error.setting}", error.problem) from None
