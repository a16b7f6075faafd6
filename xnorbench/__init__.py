"""xnorbench: what XNOR-Net really buys you, measured, with every number in a database."""

import logging

__version__ = "0.1.0"


class _NoCudaHomeNotice(logging.Filter):
    """Drops torch's import-time "No CUDA runtime is found, using CUDA_HOME=..." notice
    (printed whenever ``torch.utils.cpp_extension`` is imported on a CPU-only machine,
    e.g. by ``torch.utils.benchmark``); every other message of that logger, and all of
    ours, still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaHomeNotice())
