"""A suite's options, declared once: name, default, help, how the command line spells and
parses it, and how it is checked. The CLI builds ``xnorbench run <suite>`` from these
declarations and the stored params are exactly their parsed values, so the two cannot
drift; a suite's ``DEFAULTS`` are the declared defaults.

A parser or check raises :class:`~xnorbench.errors.InputError` with a one-line message; the CLI
prints it and exits 2 before a run exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import (  # noqa: F401  (the checks a suite's options name, as o.positive)
    MAX_INT,
    at_most,
    epochs_ok,
    lr_ok,
    non_negative,
    positive,
    probability,
    seed_ok,
    threads_ok,
)
from ..errors import InputError
from ..paths import path_problem


@dataclass(frozen=True)
class Opt:
    """One option of a suite.

    ``kind``: int, float, str, bool, path, ints (comma-separated integers, stored as a
    list), strs (comma-separated names, stored as a list). ``default`` is the stored
    value (a list for ints/strs); ``None`` means "not given" (a training option then takes
    its recipe's value). ``param`` is the key in the stored params ("" = ``name``; None =
    not stored: a setting of how the run happens, like ``device``). ``check(value, flag)``
    validates the parsed value. ``decls`` spell the flag (e.g. ``--nesterov/--no-nesterov``);
    ``hidden`` options are stored with their default and never on the command line;
    ``convert(value, flag)`` turns the parsed value into the stored one (e.g. ``i/n``);
    ``noun`` names one value in messages ("unknown kernel build 'x'"). ``resume_free``:
    the option may differ on ``--resume`` (it changes how the run gets its input, not
    what it computes, e.g. ``--download``); every other option must match the run's.
    ``stored_as``: the params key a suite's ``prepare`` stores the value under when it is
    not :attr:`key` (``--seed N`` is stored as ``seeds``); a resume compares that key.
    """

    name: str
    kind: str
    default: Any
    help: str
    param: str | None = ""
    check: Callable[[Any, str], None] | None = None
    decls: tuple[str, ...] = ()
    panel: str | None = None
    show_default: bool | str = True
    hidden: bool = False
    choices: Sequence[str] = field(default=())
    minimum: int = 1
    convert: Callable[[Any, str], Any] | None = None
    noun: str = ""
    resume_free: bool = False
    stored_as: str | None = None

    @property
    def key(self) -> str | None:
        """The stored params key (None if not stored)."""
        return None if self.param is None else (self.param or self.name)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: Any) -> Any:
        """The command line's value as stored (lists parsed, choices and checks applied)."""
        if raw is None:
            return None
        value = raw
        if self.kind == "ints":
            value = int_list(raw, self.flag, self.minimum)
        elif self.kind == "strs":
            value = name_list(raw, self.flag, self.noun or "name")
            if self.choices:  # else ``check`` decides (e.g. a model name or a spec)
                for v in value:
                    choose(v, self.choices, self.noun or self.flag)
        elif self.kind == "str" and self.choices:
            choose(value, self.choices, self.noun or self.flag)
        elif self.kind == "path":
            value = str(raw)
            path_ok(value, self.flag)
        elif self.kind == "int" and not -MAX_INT <= value <= MAX_INT:
            raise InputError(f"{self.flag} {value}: too large for a whole number stored in "
                             "the database")
        if self.convert is not None:
            value = self.convert(value, self.flag)
        if self.check is not None:
            self.check(value, self.flag)
        return value

    def shown(self) -> str:
        """The default as the command line would spell it."""
        if isinstance(self.default, (list, tuple)):
            return ",".join(map(str, self.default))
        return str(self.default)


def defaults(options: Sequence[Opt]) -> dict[str, Any]:
    """The stored params of a run given no option: each stored option's default."""
    return {o.key: o.default for o in options if o.key is not None}


# ---------------------------------------------------------------- parsers and checks
def int_list(text: str, flag: str, minimum: int = 1) -> list[int]:
    """'16,32,64' -> [16, 32, 64]; anything else is a one-line error."""
    parts = [t.strip() for t in str(text).split(",")]
    if not str(text).strip() or any(not t for t in parts):
        raise InputError(f"{flag} must be a comma-separated list of integers, got {text!r}")
    try:
        values = [int(t) for t in parts]
    except ValueError:
        raise InputError(f"{flag} must be a comma-separated list of integers, "
                         f"got {text!r}") from None
    if any(v < minimum for v in values):
        raise InputError(f"{flag} values must be at least {minimum}, got {text!r}")
    if any(v > MAX_INT for v in values):
        raise InputError(f"{flag} {text}: a value is too large (at most {MAX_INT})")
    if len(set(values)) != len(values):
        twice = sorted({v for v in values if values.count(v) > 1})
        raise InputError(f"{flag} {text}: {', '.join(map(str, twice))} given twice; give "
                         "each value once")
    return values


def name_list(text: str, flag: str, noun: str = "name") -> list[str]:
    """'a,b' -> ['a', 'b']: at least one, each once."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise InputError(f"{flag} needs at least one {noun}")
    if len(set(names)) != len(names):
        raise InputError(f"{flag} {text}: each {noun} once")
    return names


def choose(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise InputError(f"unknown {what.lstrip('-').replace('-', ' ')} {value!r}; choose "
                         f"one of {', '.join(choices)}")
    return value


def path_ok(value: str | Path | None, flag: str) -> None:
    problem = path_problem(value) if value is not None else None
    if problem:
        raise InputError(f"{flag} {str(value)[:60]}...: {problem}")


def shard(text: str | None, flag: str = "--shard") -> list[int] | None:
    """'i/n' -> [i, n] (run points i, i+n, ...)."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise InputError(f"{flag} must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"{flag} {text}: need 0 <= i < n")
    return [i, n]
