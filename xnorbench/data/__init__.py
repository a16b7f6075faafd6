"""Data: the datasets a run names, read from disk into uint8 tensors (or listed, for
ImageNet-sized trees), fingerprinted, and batched on the device.
"""
