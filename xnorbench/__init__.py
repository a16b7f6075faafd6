"""xnorbench: what XNOR-Net really buys you, measured, with every number in a database.

The model API, for your own network (loaded on first use, so that ``import xnorbench``
and the command line's ``--help`` stay free of torch)::

    import xnorbench
    xnor, report = xnorbench.binarize(model)       # an XNOR copy, and what was done
    print(report)
    s = xnorbench.summary(xnor, (3, 224, 224))     # layers, sizes, MACs, speedup bound
    packed = xnorbench.pack_model(xnor.eval())     # inference on the XNOR-popcount kernel
"""

from __future__ import annotations

import logging
from typing import Any

from .version import __version__


def __getattr__(name: str) -> Any:
    """``xnorbench.binarize`` and the rest of the model API, imported when first asked for
    (explicit imports, so that the architecture test sees what this facade depends on)."""
    if name == "binarize":
        from .xnor.networks.binarize import binarize
        return binarize
    if name == "sign_inputs":
        from .xnor.networks.binarize import sign_inputs
        return sign_inputs
    if name == "summary":
        from .measure.summary import summarize
        return summarize
    if name == "pack_model":
        from .xnor.inference.packed_layers import pack_model
        return pack_model
    if name == "save_packed":
        from .xnor.inference.packed_file import save_packed
        return save_packed
    if name == "load_packed":
        from .xnor.inference.packed_file import load_packed
        return load_packed
    if name == "build_model":
        from .xnor.networks.models import build
        return build
    raise AttributeError(f"module 'xnorbench' has no attribute {name!r}")


__all__ = ["__version__", "binarize", "build_model", "load_packed", "pack_model",
           "save_packed", "sign_inputs", "summary"]


class _NoCudaHomeNotice(logging.Filter):
    """Drops torch's import-time "No CUDA runtime is found, using CUDA_HOME=..." notice
    (printed whenever ``torch.utils.cpp_extension`` is imported on a CPU-only machine,
    e.g. by ``torch.utils.benchmark``); every other message of that logger, and all of
    ours, still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaHomeNotice())
