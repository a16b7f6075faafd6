"""Capture the context a result needs: code version, libraries, machine, threads, device."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..measure.cpu_units import cpu_flags
from ..version import __version__

_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq",
              "avx512vpopcntdq", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
              "amx_int8", "amx_bf16", "popcnt", "bmi2", "neon", "asimd", "sve")


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, str]:
    """(CPU model name, the ISA flags that matter for these kernels).

    The name carries the CPU family and model numbers when /proc/cpuinfo has them:
    virtual machines often report a bare "AMD EPYC", which names no generation (Zen 3
    and Zen 4 differ in AVX-512, so a speed figure needs to say which).
    """
    model, flags = platform.processor() or platform.machine(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    family = number = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("", platform.machine(), platform.processor()):
            model = value.strip()
        if key == "cpu family" and family is None:
            family = value.strip()
        if key == "model" and number is None:
            number = value.strip()
    if family and number:
        model = f"{model} (family {family}, model {number})"
    return model, " ".join(f for f in _ISA_FLAGS if f in cpu_flags())


COMMIT_ENV = "XNORBENCH_GIT_COMMIT"
DIRTY_ENV = "XNORBENCH_GIT_DIRTY"


_DATABASE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite3")


def code_changes(porcelain: str) -> list[str]:
    """The changed paths of ``git status --porcelain`` output that make a run "dirty".

    SQLite databases are left out: a tracked results database (``reports/*/xnorbench.db``)
    changes as soon as a run writes its first row, so counting it would mark every run
    into it dirty although the code is the commit's.
    """
    paths = []
    for line in porcelain.splitlines():
        path = line[3:].split(" -> ")[-1].strip().strip('"')
        if path and not path.endswith(_DATABASE_SUFFIXES):
            paths.append(path)
    return paths


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout xnorbench runs from, or (None, None).

    Dirty means tracked files other than SQLite databases differ from the commit (see
    :func:`code_changes`).

    A copied tree (a device machine's) cannot trust git: it may have no ``.git``, or one
    from an earlier state of the checkout (seen on the device: runs of commit C recorded
    as the session's first commit, dirty). The script that copies it sets
    ``XNORBENCH_GIT_COMMIT`` (and ``XNORBENCH_GIT_DIRTY`` = 0 or 1), which win when set.
    """
    root = Path(__file__).resolve().parents[2]
    if os.environ.get(COMMIT_ENV):  # the copier said what it copied: a copy's .git (the
        # device machine's is the session's first state) may not be the tree's commit
        dirty = os.environ.get(DIRTY_ENV)
        return os.environ[COMMIT_ENV], None if dirty is None else dirty not in ("0", "")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=10,
                                check=True).stdout
        return commit, bool(code_changes(status))
    except (OSError, subprocess.SubprocessError):
        return None, None


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; validates ``cuda`` is really there."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return device


def _version(package: str) -> str | None:
    """The installed version of ``package`` (None if it is not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def capture(device: str = "cpu", seed: int | None = None) -> dict[str, Any]:
    """Everything a run row stores about where and how it ran (torchvision's version
    read from its installed metadata, not by importing it)."""
    commit, dirty = git_state()
    model, flags = cpu_info()
    ctx: dict[str, Any] = {
        "git_commit": commit, "git_dirty": dirty,
        "xnorbench_version": __version__,
        "torch_version": torch.__version__, "torchvision_version": _version("torchvision"),
        "python_version": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": model, "cpu_flags": flags,
        "threads": torch.get_num_threads(), "device": device,
        "gpu_name": None, "hostname": socket.gethostname(), "seed": seed,
        "cpu_count": os.cpu_count(),
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        ctx["gpu_name"] = props.name
        ctx["cuda_version"] = torch.version.cuda
        ctx["gpu_memory_bytes"] = props.total_memory
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=10)
            ctx["gpu_driver"] = out.stdout.strip().splitlines()[0] if out.stdout else None
        except (OSError, subprocess.SubprocessError, IndexError):
            ctx["gpu_driver"] = None
    return ctx
