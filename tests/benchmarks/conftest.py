"""Benchmarks run on one thread unless a test says otherwise: per-core figures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
