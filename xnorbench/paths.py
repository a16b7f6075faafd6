"""Path checks every command shares: a name the file system cannot hold is bad input.

Linux refuses a path component longer than 255 bytes (``NAME_MAX``) or a path longer
than 4095 (``PATH_MAX``) with ``OSError`` errno 36, deep inside whatever first touches
it; checking up front turns that into one line naming the option.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME_MAX = 255
PATH_MAX = 4095


def path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot name a file here (a part or the whole too long), else None."""
    text = os.fsencode(os.fspath(path))
    if len(text) > PATH_MAX:
        return f"the path is {len(text)} bytes long; at most {PATH_MAX}"
    for part in Path(os.fspath(path)).parts:
        n = len(os.fsencode(part))
        if n > NAME_MAX:
            return f"a part of it is {n} bytes long ({part[:24]}...); at most {NAME_MAX}"
    return None
