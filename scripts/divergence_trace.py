#!/usr/bin/env python3
"""Step-by-step trace of XNOR LeNet-5 under a named recipe: why a gradient rule diverges.

Prints, for each of the first ``--steps`` training steps on MNIST: the loss, the largest
logit, and per binary layer the mean |dC/dW| the rule hands the optimizer, the layer's
alpha (mean |W| of its centred, clamped latent weights = the scale of its binary output)
and the smallest BatchNorm scale in front of it. Uses xnorbench's own optimizer,
schedule and training step, so the trace is what `xnorbench run accuracy` trains.

    python scripts/divergence_trace.py --recipe port-lenet5 --grad-rule reference
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from xnorbench.data.datasets import load_dataset
from xnorbench.training.optim import make_scheduler
from xnorbench.training.recipes import recipe_from, resolve
from xnorbench.training.setup import build_setup
from xnorbench.xnor import binary_layers
from xnorbench.xnor.layers.step import train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="port-lenet5")
    ap.add_argument("--grad-rule", default=None, help="override the recipe's rule")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's lr")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = resolve(args.recipe, {"grad_rule": args.grad_rule, "lr": args.lr})
    recipe = replace(recipe_from(p), epochs=1, xnor_path="binop")  # the port's workflow
    bundle = load_dataset(p["dataset"], args.data_dir)
    setup = build_setup(bundle, p["model"], "xnor", recipe)
    model, opt, loader, xnor_step = setup.model, setup.optimizer, setup.train_loader, setup.step
    sched = make_scheduler(opt, recipe, len(loader))
    layers = binary_layers(model)
    print(f"recipe {args.recipe}: {recipe.describe()}, rule {recipe.grad_rule}, seed "
          f"{recipe.seed}")
    print("step  loss       max|logit|  " + "  ".join(
        f"{n}: mean|dC/dW|  alpha   min BN scale" for n, _ in layers))
    print("(after each step: dC/dW as the rule made it, the alpha the next step binarizes "
          "with, the BN scale before the recipe's clamp, if any, applies again)")
    for step, (x, y) in enumerate(loader):
        if step == args.steps:
            break
        model.train()
        out, loss = train_step(model, x, y, opt, xnor_step, recipe.amp, recipe.bn_gamma_min)
        sched.step()
        cols = []
        for _, layer in layers:
            w = layer.weight.detach()
            g = layer.weight.grad
            grad = float(g.abs().mean()) if g is not None else float("nan")
            # the alpha the next step binarizes with: mean |W| after centring and clamping
            alpha = float((w - w.mean(1, keepdim=True)).clamp(-1, 1).abs().mean())
            cols.append(f"{grad:>13.2e}  {alpha:6.3f}  {float(layer.bn.weight.min()):>9.2f}")
        print(f"{step:>4}  {loss.item():<9.3f}  {out.detach().abs().max().item():>10.1f}  "
              + "  ".join(cols), flush=True)


if __name__ == "__main__":
    main()
