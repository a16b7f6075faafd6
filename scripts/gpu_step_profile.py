#!/usr/bin/env python3
"""Where a ResNet-18 training step spends its GPU time: float vs XNOR (fused layers).

Times 20 steps of each (random CIFAR-shaped data, the short recipes' batch 512, Adam,
bf16 autocast, channels_last) after 5 warm-up steps (compiles, cuDNN's choice), then
profiles 3 steps with torch.profiler and writes the operators and kernels sorted by
CUDA time and by CPU time. ``reports/gpu-h200/profile-call6-step.txt`` came from it.
Usage (on the device, after the wheels are on PYTHONPATH):
    python scripts/gpu_step_profile.py OUT/profile.txt [--batch 512]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from xnorbench.xnor import FusedXNOR
from xnorbench.xnor.layers.step import train_step
from xnorbench.xnor.networks import models
from xnorbench.xnor.sign import compiled


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    x = torch.randn(args.batch, 3, 32, 32, device="cuda")
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device="cuda")
    with open(args.out, "w") as out:
        for variant in ("float", "xnor"):
            model = models.resnet18(binary=variant == "xnor").cuda()
            model = model.to(memory_format=torch.channels_last).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            step = FusedXNOR(model) if variant == "xnor" else None
            for _ in range(5):
                train_step(model, x, y, opt, step, True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                train_step(model, x, y, opt, step, True)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / 20 * 1e3
            print(f"{variant} {ms:.2f} ms/step (batch {args.batch}; xnor graphs: "
                  f"{compiled.mode()})", file=out, flush=True)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    train_step(model, x, y, opt, step, True)
                torch.cuda.synchronize()
            table = prof.key_averages().table
            print(table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=60),
                  file=out)
            print(table(sort_by="self_cpu_time_total", row_limit=15,
                        max_name_column_width=60), file=out, flush=True)


if __name__ == "__main__":
    main()
