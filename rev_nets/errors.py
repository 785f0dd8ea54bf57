"""Errors a user can cause: each message is one sentence naming the cause and the fix.

Entry points print such an error in one line instead of a traceback and exit
with ``EXIT_USER_ERROR``; a run that diverged exits with ``EXIT_DIVERGED``.
"""

import contextlib
from collections.abc import Iterator

EXIT_USER_ERROR = 2  # A flag value, data or a changed config this project refuses: fix the command.
EXIT_DIVERGED = 3  # A non-finite or exploding loss or params: the same command would diverge again.


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


@contextlib.contextmanager
def setting_scope(prefix: str) -> Iterator[None]:
    """Re-raises a ``SettingError`` from inside as the setting ``f"{prefix}.{setting}"`` of an enclosing record."""
    try:
        yield
    except SettingError as error:
        raise SettingError(f"{prefix}.{error.setting}", error.problem) from None
