"""Fig. 4 (b) and (c) of the paper drawn from stored sweep rows (matplotlib, PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(points: list[dict[str, Any]], sweep: str, axis: str
            ) -> dict[int, list[dict[str, Any]]]:
    by_threads: dict[int, list[dict[str, Any]]] = {}
    for p in points:
        if p["sweep"] == sweep and p.get("speedup") is not None:
            by_threads.setdefault(p["threads"], []).append(p)
    for pts in by_threads.values():
        pts.sort(key=lambda p: p[axis])
    return by_threads


def _plot(points: list[dict[str, Any]], sweep: str, axis: str, xlabel: str, title: str,
          path: Path, logx: bool) -> Path | None:
    series = _series(points, sweep, axis)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    theory_drawn = False
    for threads, pts in sorted(series.items()):
        xs = [p[axis] for p in pts]
        vs_fastest = all(p.get("speedup_vs_fastest") is not None for p in pts)
        key, against = (("speedup_vs_fastest", "fastest float") if vs_fastest
                        else ("speedup", "torch eager"))
        ax.plot(xs, [p[key] for p in pts], "o-",
                label=f"vs {against}, packing included ({threads} thr)")
        nopack = [p.get(f"{key[:7]}_nopack{key[7:]}") for p in pts]
        ax.plot(xs, [math.nan if v is None else v for v in nopack], "s--", alpha=0.7,
                label=f"vs {against}, packed input ({threads} thr)")
        if vs_fastest:
            ax.plot(xs, [p["speedup"] for p in pts], "^:", alpha=0.5,
                    label=f"vs torch eager, packing included ({threads} thr)")
        for q, mark in (("int8", "v-"), ("bf16", "d-")):
            low = [p.get(f"speedup_vs_fastest_{q}") for p in pts]
            if any(v is not None for v in low):
                ax.plot(xs, [math.nan if v is None else v for v in low], mark,
                        label=f"vs fastest {q}, packing included ({threads} thr)")
        peer = [p.get("speedup_vs_openvino_binaryconv") for p in pts]
        ratio = [None if v is None or p.get("speedup_vs_fastest") is None
                 else p["speedup_vs_fastest"] / v for p, v in zip(pts, peer)]
        if any(v is not None for v in ratio):
            ax.plot(xs, [math.nan if v is None else v for v in ratio], "x-.",
                    label=f"OpenVINO BinaryConvolution vs fastest float ({threads} thr)")
        if not theory_drawn:
            ax.plot(xs, [p["theoretical_speedup"] for p in pts], "k:", lw=2,
                    label="theoretical 64cN_W/(cN_W+64)")
            theory_drawn = True
    if logx:
        ax.set_xscale("log", base=2)
        xs_all = sorted({p[axis] for pts in series.values() for p in pts})
        ax.set_xticks(xs_all)
        ax.set_xticklabels([str(x) for x in xs_all])
    else:
        ax.set_xticks(sorted({p[axis] for pts in series.values() for p in pts}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("speedup over float conv (x)")
    cpu = next(iter(series.values()))[0].get("cpu") or ""
    ax.set_title(f"{title}\n{cpu}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sweeps(points: list[dict[str, Any]], output_dir: Path) -> list[Path]:
    """Write ``sweep_channels.png`` (Fig. 4b) and ``sweep_filter.png`` (Fig. 4c)."""
    out = []
    b = _plot(points, "channels", "channels", "number of channels (3x3 filter, 14x14 input)",
              "Fig. 4(b): speedup vs channels", output_dir / "sweep_channels.png", True)
    c = _plot(points, "kernel", "kernel", "filter size (256 channels, 14x14 input)",
              "Fig. 4(c): speedup vs filter size", output_dir / "sweep_filter.png", False)
    out += [p for p in (b, c) if p is not None]
    return out
