"""What the commands share: the device choice and the checks of their option values,
each a one-line error (exit 2) through :func:`.app.fail`."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

from .app import fail

SQL_INT_MAX = 2**63 - 1
"""The largest id or count a database integer holds (SQLite's and PostgreSQL's bigint)."""


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def parse_int_list(text: str, name: str, minimum: int = 1) -> list[int]:
    """'16,32,64' -> [16, 32, 64]; anything else is a one-line error."""
    from ..harness.options import int_list
    from ..harness.registry import InputError

    try:
        return int_list(text, name, minimum)
    except InputError as exc:
        fail(str(exc))


def choose(value: str, choices: tuple[str, ...] | list[str], what: str) -> str:
    """Return ``value`` if it is one of ``choices``; else a one-line error."""
    if value not in choices:
        fail(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def positive(value: int | float | None, what: str, allow_zero: bool = False,
              maximum: float = SQL_INT_MAX) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"{what} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        fail(f"{what} must be {'non-negative' if allow_zero else 'positive'}, got {value}")
    if value > maximum:
        fail(f"{what} {value:g} is too large (at most {maximum:g})")


def check_run_id(value: int | None, what: str = "run id") -> None:
    """A run id the database can hold (a positive 64-bit integer)."""
    if value is not None and not 1 <= value <= SQL_INT_MAX:
        fail(f"{what} {value}: no such run (ids are positive whole numbers below 2^63)")


MAX_MINUTES = 10 * 365 * 24 * 60
"""The longest heartbeat age a command accepts (ten years, in minutes)."""


def check_path(path: Path | None, what: str) -> None:
    """A path option the file system cannot hold (a name over 255 bytes): one line."""
    from ..paths import path_problem

    problem = path_problem(path) if path is not None else None
    if problem:
        fail(f"{what} {str(path)[:60]}...: {problem}")


def check_tags(tags: list[str] | None) -> list[str]:
    out = []
    for t in tags or []:
        t = t.strip()
        if not t or len(t) > 64 or "," in t or not t.isprintable():
            fail(f"--tag {t!r}: a tag is 1 to 64 printable characters (no commas, no line "
                 "breaks or tabs)")
        out.append(t)
    return out
