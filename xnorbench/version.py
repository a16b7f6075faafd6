"""The package's version, in a module of its own so that what records it with a run
(``runs/environment.py``) need not import the package's facade (``__init__``)."""

__version__ = "0.1.0"
