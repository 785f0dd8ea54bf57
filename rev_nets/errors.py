"""Errors a user can cause: each message is one sentence naming the cause and the fix.

Entry points print such an error in one line instead of a traceback.
"""


class UserError(Exception):
    """A problem the user can fix (a setting, a file, a run directory); the message says how."""


class InputError(UserError, ValueError):
    """An argument or file given to an analysis that it cannot use (a missing file, a malformed spec)."""
