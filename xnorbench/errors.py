"""The base of every error xnorbench raises on purpose, the one every layer raises for
unusable input, and how any exception is said in one line.

It lives at the bottom of the package so that data readers, option checks, the
runner and the CLI share it without importing one another. Each error carries the exit
code the command line answers it with, so the CLI picks the code from the error, never
from a list of classes."""

from __future__ import annotations


class XnorbenchError(Exception):
    """An error xnorbench raises on purpose, said in one line by the CLI.

    ``exit_code``: 1 where a run or the database failed, 2 where the input is unusable,
    130 where the user interrupted."""

    exit_code = 1


class InputError(XnorbenchError):
    """The user's input is unusable (e.g. a missing or corrupt dataset).

    Raised by a suite before it produced any row, it leaves nothing in the database:
    the runner deletes the run row and the CLI answers with one line and exit code 2.
    """

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """``exc``'s message as one line: its first line, or its type's name if it has none
    (what a one-line ``error:`` says of an exception from code it does not own)."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def exception_line(exc: BaseException) -> str:
    """``exc`` as ``Type: first line`` (``Type`` alone where it says nothing)."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text.splitlines()[0]}" if text else name
