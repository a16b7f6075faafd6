"""The one error every layer may raise for unusable input.

It lives at the bottom of the package so that data readers, option checks, the
runner and the CLI share it without importing one another."""

from __future__ import annotations


class InputError(Exception):
    """The user's input is unusable (e.g. a missing or corrupt dataset).

    Raised by a suite before it produced any row, it leaves nothing in the database:
    the runner deletes the run row and the CLI answers with one line and exit code 2.
    """
