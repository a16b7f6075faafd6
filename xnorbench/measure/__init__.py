"""Measurement instruments: timing side by side (``torch.utils.benchmark``), the float
engines a binary kernel is compared against, the machine's peak rates (ceilings), its
state while measuring, memory in a fresh process, bytes saved for backward, and a
network's layer summary. None of them knows about runs or the database.
"""
