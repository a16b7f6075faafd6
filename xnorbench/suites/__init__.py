"""Declared suites: importing this package registers every module in it.

A suite is one module that calls :func:`~xnorbench.runs.registry.register`; a new
file here is found without being listed.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "common":
        importlib.import_module(f"{__name__}.{_info.name}")
