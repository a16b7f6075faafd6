"""Peak memory of one inference pass or one training step, measured in a fresh process.

Run as ``python -m xnorbench.harness.memprobe MODEL VARIANT MODE BATCH DEVICE``; prints one
JSON line. A fresh process per measurement keeps peaks clean: nothing else this
program did before inflates them. CPU: peak RSS (``ru_maxrss``) and RSS after imports
(psutil), so the increment is visible. CUDA: ``max_memory_allocated`` and
``max_memory_reserved`` after a reset.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from typing import Any


def probe(model_name: str, variant: str, mode: str, batch: int, device: str) -> dict[str, Any]:
    import psutil
    import torch

    from ..xnor import BinOp, models
    from ..xnor.models import INPUT_SHAPE
    from ..xnor.packed import pack_model
    from .training import train_step

    torch.manual_seed(0)
    torch.set_num_threads(1)
    base_rss = psutil.Process().memory_info().rss
    model = models.build(model_name, binary=variant != "float").to(device)
    x = torch.randn(batch, *INPUT_SHAPE[model_name], device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if mode == "inference":
        model.eval()
        if variant == "xnor_packed":
            model = pack_model(model.cpu())
        with torch.no_grad():
            model(x)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        bin_op = BinOp(model) if variant == "xnor" else None
        y = torch.randint(0, 10, (batch,), device=device)
        for _ in range(2):  # the second step has optimizer state too
            train_step(model, x, y, opt, bin_op)
    out: dict[str, Any] = {"base_rss_bytes": base_rss,
                           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                           * 1024}
    if device == "cuda":
        torch.cuda.synchronize()
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
    return out


def measure(model_name: str, variant: str, mode: str, batch: int, device: str
            ) -> dict[str, Any]:
    """Run :func:`probe` in a fresh interpreter and return its JSON."""
    cmd = [sys.executable, "-m", "xnorbench.harness.memprobe", model_name, variant, mode,
           str(batch), device]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    m, v, mode, b, d = sys.argv[1:6]
    print(json.dumps(probe(m, v, mode, int(b), d)))
