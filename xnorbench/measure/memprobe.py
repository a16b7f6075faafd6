"""Peak memory of one inference pass or one training step, measured in a fresh process.

Run as ``python -m xnorbench.measure.memprobe MODEL VARIANT MODE BATCH DEVICE``; prints one
JSON line. A fresh process per measurement keeps peaks clean: nothing else this
program did before inflates them. CPU: peak RSS (``VmHWM`` of the child's own address
space; ``ru_maxrss`` would also count the parent's RSS at fork time, which Linux keeps
across exec) and RSS after imports
(psutil), so the increment is visible. The child runs with a fixed glibc mmap threshold
(``MALLOC_MMAP_THRESHOLD_``): every allocation above 64 KiB is its own mapping and goes
back to the system when freed, so peak RSS follows the bytes really alive at once
instead of what the heap kept from earlier frees (with glibc's default, growing
threshold, float and XNOR training peaks differed by 1 % although XNOR keeps half the
bytes for backward). CUDA: ``max_memory_allocated`` and ``max_memory_reserved``.

Variants (:mod:`xnorbench.variants`): inference ``float``, ``xnor`` (simulated) or
``xnor_packed`` (the packed kernels); a training step ``float``, ``xnor_fused`` or
``xnor_binop``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def peak_rss_bytes() -> int:
    """This address space's RSS high-water mark (``VmHWM``), else ``ru_maxrss`` (no
    /proc: not Linux)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def probe(model_name: str, variant: str, mode: str, batch: int, device: str) -> dict[str, Any]:
    import psutil
    import torch

    from ..variants import Variant
    from ..xnor.inference.packed_layers import pack_model
    from ..xnor.layers.step import step_for, train_step
    from ..xnor.networks import models
    from ..xnor.networks.models import input_shape

    torch.manual_seed(0)
    torch.set_num_threads(1)
    base_rss = psutil.Process().memory_info().rss
    model = models.build(model_name, binary=variant != Variant.FLOAT).to(device)
    x = torch.randn(batch, *input_shape(model_name), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if mode == "inference":
        model.eval()
        if variant == Variant.XNOR_PACKED:
            model = pack_model(model.cpu())
        with torch.no_grad():
            model(x)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xnor_step = step_for(model, variant)
        y = torch.randint(0, 10, (batch,), device=device)
        for _ in range(2):  # the second step has optimizer state too
            train_step(model, x, y, opt, xnor_step)
    out: dict[str, Any] = {"base_rss_bytes": base_rss, "peak_rss_bytes": peak_rss_bytes()}
    if device == "cuda":
        torch.cuda.synchronize()
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
    return out


MMAP_THRESHOLD = 65536
"""Bytes from which glibc serves an allocation by its own mmap (fixed, see above)."""


def measure(model_name: str, variant: str, mode: str, batch: int, device: str
            ) -> dict[str, Any]:
    """Run :func:`probe` in a fresh interpreter and return its JSON."""
    cmd = [sys.executable, "-m", "xnorbench.measure.memprobe", model_name, variant, mode,
           str(batch), device]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    m, v, mode, b, d = sys.argv[1:6]
    print(json.dumps(probe(m, v, mode, int(b), d)))
