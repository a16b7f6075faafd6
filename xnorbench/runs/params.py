"""A suite's typed parameters: one frozen dataclass per suite, stored as its ``asdict()``.

Why a class and not a dict: a suite reads ``p.channels``, which the type checker knows
exists and has a type, where ``p["channels"]`` is a string key that fails only when the
run reaches it. The stored ``params`` of a run are exactly ``asdict()``, and a stored run
is read back through :meth:`SuiteParams.from_stored`, which fills what an older run did
not store with today's default and maps keys it stored under another name
(:meth:`SuiteParams.upgrade`), so resuming an old run and starting a new one build the
same object.

Lists are stored (JSON has no tuple) and held as tuples (a frozen object whose list
could be appended to would not be frozen).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from ..errors import InputError

P = TypeVar("P", bound="SuiteParams")


def _held(value: Any) -> Any:
    """A stored value as the object holds it: lists become tuples."""
    return tuple(_held(v) for v in value) if isinstance(value, list) else value


def _stored(value: Any) -> Any:
    """A held value as the database stores it: tuples become lists."""
    return [_stored(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class SuiteParams:
    """Base of every suite's parameters. A subclass declares its fields with defaults
    (the values a run given no option stores)."""

    @classmethod
    def upgrade(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """Keys an older run stored under another name, renamed (none here)."""
        return stored

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_stored(cls: type[P], stored: Mapping[str, Any], *, strict: bool = False) -> P:
        """The parameters a run stored (or a caller gives), missing ones at their default.

        ``strict`` (a new run): a key that is no field is an ``InputError`` (a misspelt
        parameter must not run with its default); reading an old run back, keys this
        version no longer has are ignored.
        """
        values = cls.upgrade(dict(stored))
        names = set(cls.field_names())
        unknown = sorted(set(values) - names)
        if strict and unknown:
            raise InputError(f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; "
                             f"known: {', '.join(sorted(names))}")
        return cls(**{k: _held(v) for k, v in values.items() if k in names})

    def asdict(self) -> dict[str, Any]:
        """What a run stores: every field, lists for tuples."""
        return {f.name: _stored(getattr(self, f.name)) for f in fields(self)}


def coerce(params: SuiteParams | Mapping[str, Any], cls: type[P], *, strict: bool) -> P:
    """``params`` as ``cls``: an instance as it is, a mapping through ``from_stored``."""
    if isinstance(params, cls):
        return params
    if isinstance(params, SuiteParams):
        raise TypeError(f"{type(params).__name__} given where {cls.__name__} is expected")
    return cls.from_stored(params, strict=strict)
