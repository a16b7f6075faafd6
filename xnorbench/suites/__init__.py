"""Declared suites; importing this package registers them all."""

from . import accuracy, sweep, timing  # noqa: F401
