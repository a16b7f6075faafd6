"""Declared suites; importing this package registers them all."""

from . import accuracy, compare, memory, sweep, timing  # noqa: F401
