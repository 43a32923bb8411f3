"""User-facing errors: one line naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad config, bad flag, missing or corrupt data).

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """

    exit_code = 2


class DataError(UserError):
    """Stored or imported data is missing, corrupt or inconsistent."""
