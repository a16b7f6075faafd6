"""``python -m xnorbench.cli``: the same as the ``xnorbench`` command."""

from . import main

main()
