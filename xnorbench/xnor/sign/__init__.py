"""The sign maths: sign with sign(0) = +1, BinActive, the scaled sign and its three
weight-gradient rules as formulas (``rules``), and their fast forms: one-pass
operators on the CPU (``bitops``, on the C++ training operators) and compiled graphs
on CUDA (``compiled``).
"""
