"""Declared suites; importing this package registers them all."""

from . import accuracy, ceilings, compare, memory, sweep, timing  # noqa: F401
