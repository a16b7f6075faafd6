"""Training: recipes (every choice that shapes a number), the optimizer and schedule,
the per-epoch loop with its checkpoints, the loaders a recipe asks for, and the trained
XNOR network packed and evaluated through the C++ kernel.
"""
