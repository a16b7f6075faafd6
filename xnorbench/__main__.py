"""``python -m xnorbench`` (and ``torchrun ... -m xnorbench``): the command line."""

from .cli import main

main()
