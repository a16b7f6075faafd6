"""xnorbench: what XNOR-Net really buys you, measured, with every number in a database."""

__version__ = "0.1.0"
