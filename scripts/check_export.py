#!/usr/bin/env python3
"""A run's exported XNOR network, loaded by OpenVINO alone, against the packed network.

Exports the run's trained XNOR network with ``xnorbench export --run ID``, then starts a
plain Python process that imports nothing but ``openvino`` and ``numpy``: it reads the
``.xml``, reshapes it to the batch size, and predicts every test image (normalized here
exactly as the run's loader did, handed over as a ``.npy`` file). The packed network
(xnorbench's kernels) predicts the same images here; the script prints how many of the
predictions differ, the largest output difference, and both accuracies.

Usage: python scripts/check_export.py --db DB --run ID [--data-dir DIR] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

PLAIN = """
import json, sys
import numpy as np
import openvino as ov
core = ov.Core()
model = core.read_model(sys.argv[1])
x = np.load(sys.argv[2])
batch = int(sys.argv[3])
model.reshape([batch, *x.shape[1:]])
compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
outs = []
for i in range(0, len(x), batch):
    chunk = x[i:i + batch]
    n = len(chunk)
    if n < batch:
        chunk = np.concatenate([chunk, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
    outs.append(compiled({0: chunk})[0][:n])
np.save(sys.argv[4], np.concatenate(outs))
print(json.dumps({"openvino": ov.get_version(), "modules": sorted(
    m for m in sys.modules if m.split(".")[0] in ("torch", "xnorbench"))}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None, help="export folder [default: a temp one]")
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()

    from xnorbench.data.datasets import load_dataset
    from xnorbench.data.loader import BatchLoader
    from xnorbench.db import Store
    from xnorbench.xnor import load_packed
    from xnorbench.xnor.inference.packed_layers import pack_model

    store = Store.open(args.db)
    (row, *_) = store.results([args.run], metric="packed_test_accuracy")
    run = store.run(args.run)
    assert run is not None
    data_dir = args.data_dir or (run.params or {}).get("data_dir")
    bundle = load_dataset(str(row.dataset), data_dir, download=False)
    x = torch.cat([b for b, _ in BatchLoader(bundle.test, 1000, mean=bundle.mean,
                                             std=bundle.std)])
    labels = bundle.test.labels
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.output or Path(tmp) / "ov")
        exported = subprocess.run([sys.executable, "-m", "xnorbench", "--db", args.db,
                                   "export", "--run", str(args.run), "--output",
                                   str(out_dir)], capture_output=True, text=True, check=True)
        xml = exported.stdout.strip().splitlines()[-1]
        np.save(Path(tmp) / "x.npy", x.numpy())
        plain = subprocess.run([sys.executable, "-c", PLAIN, xml, str(Path(tmp) / "x.npy"),
                                str(args.batch), str(Path(tmp) / "y.npy")],
                               capture_output=True, text=True, check=True)
        info = json.loads(plain.stdout.strip().splitlines()[-1])
        got = torch.from_numpy(np.load(Path(tmp) / "y.npy"))
    packed = pack_model(load_packed(row.params["packed_file"]))
    with torch.no_grad():
        want = torch.cat([packed(c) for c in x.split(args.batch)])
    differ = int((got.argmax(1) != want.argmax(1)).sum())
    # beyond float rounding: a float layer's output within rounding of a sign threshold
    # took the other sign (OpenVINO's float conv rounds differently from oneDNN's)
    scale = want.abs().amax(1)
    flipped = int(((got - want).abs().amax(1) > 1e-4 * scale).sum())
    acc = {k: 100.0 * float((v.argmax(1) == labels).float().mean())
           for k, v in (("openvino", got), ("packed", want))}
    print(f"exported {xml} (openvino {info['openvino']}; the plain process imported "
          f"{len(info['modules'])} torch/xnorbench modules)")
    print(f"{len(labels)} test images: {differ} predictions differ; {flipped} images' "
          "outputs differ beyond float rounding (a sign taken within rounding of its "
          f"threshold); max |output diff| "
          f"{float((got - want).abs().max()):.3g} at output scale "
          f"{float(want.abs().max()):.3g}; accuracy OpenVINO {acc['openvino']:.2f} %, "
          f"packed {acc['packed']:.2f} %")
    return 0 if differ == 0 and not info["modules"] else 1


if __name__ == "__main__":
    sys.exit(main())
