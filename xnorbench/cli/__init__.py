"""The xnorbench command line (Typer): :mod:`.app` is the root command and what every
command shares (the database option, one-line errors), :mod:`.common` the checks of
option values, :mod:`.suites` the suite commands (``run <suite>``, ``sweep``),
:mod:`.summary` ``summary``, :mod:`.export` ``export`` (a trained XNOR network to
OpenVINO), :mod:`.results` the commands that read results, :mod:`.runs` the run and
schema commands. Importing this package registers them all on :data:`app`."""

from . import export, results, runs, suites, summary  # noqa: F401  (each registers its commands)
from .app import State, app, fail, main
from .suites import suite_command

__all__ = ["State", "app", "fail", "main", "suite_command"]
