"""Checks of option values, each a one-line :class:`~xnorbench.errors.InputError` naming
the flag. Below every part of the package that declares options (a training recipe's
fields, a suite's options), so each declares its check where it declares the option."""

from __future__ import annotations

import math

from .errors import InputError

MAX_THREADS = 1024
MAX_SEED = 2**31 - 1
"""Seeds are stored in an INTEGER column on every backend (PostgreSQL's is 32-bit)."""
MAX_INT = 2**63 - 1
"""No whole-number option goes above what a database integer holds."""
MAX_EPOCHS = 10_000
"""More epochs than any recipe trains: a larger value is a typo, not a run."""
MAX_LR = 10.0
"""Above this learning rate no recipe here trains (the loss overflows in the first steps)."""


def positive(value: float | int | None, flag: str) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {value}")
    if value <= 0:
        raise InputError(f"{flag} must be positive, got {value}")


def non_negative(value: float | int | None, flag: str) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {value}")
    if value < 0:
        raise InputError(f"{flag} must be non-negative, got {value}")


def at_most(value: float | int | None, flag: str, maximum: float) -> None:
    if value is not None and value > maximum:
        raise InputError(f"{flag} {value:g} is too large (at most {maximum:g})")


def epochs_ok(value: int | None, flag: str = "--epochs") -> None:
    positive(value, flag)
    if value is not None and value > MAX_EPOCHS:
        raise InputError(f"{flag} {value}: at most {MAX_EPOCHS}")


def lr_ok(value: float | None, flag: str = "--lr") -> None:
    positive(value, flag)
    if value is not None and value > MAX_LR:
        raise InputError(f"{flag} {value:g}: above {MAX_LR:g} no recipe trains (the loss "
                         f"overflows within steps); give at most {MAX_LR:g}")


def probability(value: float | None, flag: str) -> None:
    """0 <= value < 1 (a smoothing or dropout share)."""
    non_negative(value, flag)
    if value is not None and value >= 1:
        raise InputError(f"{flag} must be below 1, got {value}")


def threads_ok(value: int | None, flag: str = "--threads") -> None:
    positive(value, flag)
    if value is not None and value > MAX_THREADS:
        raise InputError(f"{flag} {value}: at most {MAX_THREADS}")


def seed_ok(value: int | None, flag: str = "--seed") -> None:
    if value is not None and not 0 <= value <= MAX_SEED:
        raise InputError(f"{flag} {value}: a seed is between 0 and {MAX_SEED}")
