"""What the commands share: the device choice and the checks of their option values,
each a one-line error (exit 2) through :func:`.app.fail`."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from .app import fail

SQL_INT_MAX = 2**63 - 1
"""The largest id or count a database integer holds (SQLite's and PostgreSQL's bigint)."""


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _one_line(check: Callable[..., Any], *args: Any) -> Any:
    """Run one of :mod:`xnorbench.runs.options`' checks; its ``InputError`` becomes the
    command's one-line error (the suites' options and these flags share every check)."""
    from ..errors import InputError

    try:
        return check(*args)
    except InputError as exc:
        fail(str(exc))


def parse_int_list(text: str, name: str, minimum: int = 1) -> list[int]:
    """'16,32,64' -> [16, 32, 64]; anything else is a one-line error."""
    from ..runs.options import int_list

    return _one_line(int_list, text, name, minimum)


def choose(value: str, choices: tuple[str, ...] | list[str], what: str) -> str:
    """Return ``value`` if it is one of ``choices``; else a one-line error."""
    from ..runs.options import choose as choose_one

    return _one_line(choose_one, value, choices, what)


def positive(value: int | float | None, what: str, allow_zero: bool = False,
              maximum: float = SQL_INT_MAX) -> None:
    """``value`` > 0 (>= 0 with ``allow_zero``), finite and at most ``maximum``."""
    from ..runs.options import at_most, non_negative
    from ..runs.options import positive as above_zero

    _one_line(non_negative if allow_zero else above_zero, value, what)
    _one_line(at_most, value, what, maximum)


def check_run_id(value: int | None, what: str = "run id") -> None:
    """A run id the database can hold (a positive 64-bit integer)."""
    if value is not None and not 1 <= value <= SQL_INT_MAX:
        fail(f"{what} {value}: no such run (ids are positive whole numbers below 2^63)")


MAX_MINUTES = 10 * 365 * 24 * 60
"""The longest heartbeat age a command accepts (ten years, in minutes)."""


def check_path(path: Path | None, what: str) -> None:
    """A path option the file system cannot hold (a name over 255 bytes): one line."""
    from ..runs.options import path_ok

    _one_line(path_ok, path, what)


def check_folder(path: Path | None, what: str) -> None:
    """A folder option (checkpoints): refused before a run exists where the path, or a
    folder above it, is an existing file (the run would fail at its first checkpoint)."""
    check_path(path, what)
    if path is None:
        return
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                fail(f"{what} {path}: {part} is a file, not a folder")
            return


def check_tags(tags: list[str] | None) -> list[str]:
    out = []
    for t in tags or []:
        t = t.strip()
        if not t or len(t) > 64 or "," in t or not t.isprintable():
            fail(f"--tag {t!r}: a tag is 1 to 64 printable characters (no commas, no line "
                 "breaks or tabs)")
        out.append(t)
    return out
