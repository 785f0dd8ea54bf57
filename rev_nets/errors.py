"""Errors a user can cause: each message is one sentence naming the cause and the fix.

Entry points print such an error in one line instead of a traceback and exit
with ``EXIT_USER_ERROR``; a run whose loss diverged exits with ``EXIT_DIVERGED``.
"""

EXIT_USER_ERROR = 2  # A flag value, data or a changed config this project refuses: fix the command.
EXIT_DIVERGED = 3  # A non-finite loss: the same command would diverge again.


class UserError(Exception):
    """A problem the user can fix (a setting, a file, a run directory); the message says how."""


class InputError(UserError, ValueError):
    """An argument or file given to an analysis that it cannot use (a missing file, a malformed spec)."""
