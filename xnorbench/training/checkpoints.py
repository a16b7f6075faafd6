"""Per-epoch training checkpoints: written atomically, read back only for the run and
training they were written for, and failures said in one line (a full disk included).
A checkpoint is read as tensors and plain data (``weights_only=True``): a file that holds
an object whose unpickling would run code is refused, and nothing in it runs."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import XnorbenchError, first_line


class CheckpointError(XnorbenchError, OSError):
    """A checkpoint could not be written or used; the message names the file and why."""

    exit_code = 2


def load_checkpoint(path: Path, device: str, binding: dict[str, Any]) -> dict[str, Any]:
    """The state in ``path``, if it was written for exactly ``binding`` (this database,
    run, recipe key, variant and seed); else ``CheckpointError`` naming the file and the
    first field that differs. A checkpoint of another database's run with the same id, or
    of other options, is never trained on."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # an object whose loading would run code: never loaded
        raise CheckpointError(
            f"cannot read checkpoint {path}: it holds more than tensors and plain data (an "
            "object whose loading would run code), so it was not loaded and nothing in it "
            "ran; remove it to train this run from scratch") from None
    except Exception as exc:  # truncated, empty, not a checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    have = state.get("binding") if isinstance(state, dict) else None
    if not isinstance(have, dict):
        raise CheckpointError(f"checkpoint {path} records no run it belongs to (written by an "
                              "older xnorbench); remove it to train this run from scratch")
    for key, want in binding.items():
        if have.get(key) != want:
            raise CheckpointError(
                f"checkpoint {path} belongs to {key} {have.get(key)!r}, not this run's "
                f"{want!r}; remove it (or give the right --checkpoint-dir) to resume")
    return state


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a ``.tmp`` beside it, then a rename. On any
    failure (a full disk, say) the partial ``.tmp`` is removed and the previous checkpoint
    stays as it was."""
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {write_failure(exc, path)}") \
            from None


def write_failure(exc: BaseException, path: Path) -> str:
    """Why a file write failed, in words: the OS's reason, or (torch's zip writer only
    says ``unexpected pos N vs M``) how much room its file system has left."""
    reason = getattr(exc, "strerror", None)
    if reason:
        return str(reason)
    import shutil

    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return "the write was cut short (is the disk full?)"
    return (f"the write was cut short with {free / 2**20:.1f} MiB free on its file system "
            "(is the disk full?)")
