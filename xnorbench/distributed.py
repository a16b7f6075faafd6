"""Training on several processes through torch.distributed (launched by ``torchrun``).

``torchrun --nproc-per-node N [--nnodes M ...] -m xnorbench run accuracy ...`` starts N
processes per node with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :func:`setup` joins
them into one process group (NCCL on CUDA, gloo on CPU) with a timeout, so a rank that
dies or hangs fails the run instead of blocking it forever. Rank 0 owns the run: it
opens or resumes the run row, writes every row and checkpoint, and broadcasts what the
others need (run id, params, database id); the other ranks train in lockstep and write
nothing. ``--batch-size`` is the global batch: each rank takes its share of every epoch
(the DistributedSampler split: one seeded permutation for all ranks, padded to a
multiple of the world size, rank ``r`` taking every ``world``-th index from ``r``), so a
run on N processes sees the same global batches as a run on one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import InputError

TIMEOUT_ENV = "XNORBENCH_DIST_TIMEOUT_S"
_SETTLE_S = 0.1  # see shutdown


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What a run records about its processes."""
        return {"world_size": self.size, "backend": self.backend}


SINGLE = World()
_world: World = SINGLE


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout() -> timedelta:
    """How long a collective waits for the slowest rank (``XNORBENCH_DIST_TIMEOUT_S``,
    default 600 s) before the run fails."""
    raw = os.environ.get(TIMEOUT_ENV, "600")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 7 * 86400:
        raise InputError(f"{TIMEOUT_ENV}={raw!r}: give a number of seconds above 0 and up "
                         "to 604800 (a week)")
    return timedelta(seconds=seconds)


def setup(device: str) -> World:
    """Join the process group torchrun describes (once); the single world otherwise."""
    global _world
    if _world.active or not launched():
        return _world
    backend = "nccl" if device.startswith("cuda") else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timeout())
    _world = World(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _world


def world() -> World:
    """The current world (set up by :func:`setup`)."""
    return _world


def leave_together() -> bool:
    """Wait until every process is done before any tears its process group down.

    A follower ends its suite while rank 0 still evaluates and writes; waiting here, it
    learns whether rank 0 finished (and exits non-zero if not), and no process tears
    gloo down under a peer that still talks to it. Rank 0 calls this only after a
    finished run (a failure leaves by an exception): after one the followers may still
    sit in a collective, and torchrun ends them when rank 0 exits. False if another
    process left without waiting (rank 0 after a failed run). The SIGABRT processes
    sometimes died of at exit is :func:`shutdown`'s to prevent; the barrier did not."""
    if _world.active and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # gloo: "Connection closed by peer"
            return False
    return True


def shutdown() -> None:
    """Leave the process group, then give gloo's worker threads time to finish.

    Once DDP has wrapped a model the process group outlives ``destroy_process_group``,
    so its worker threads are not joined there; a thread still freeing a finished
    collective's Python-made tensors needs the GIL, and if the interpreter finalizes
    first the process aborts ("terminate called without an active exception") after a
    run that had finished. A short sleep hands such a thread the GIL (the sleep's length
    and the test that guards it: ``test_processes_exit_cleanly_after_a_ddp_run``)."""
    global _world, _announced
    if _world.active and dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(_SETTLE_S)
    _world = SINGLE
    _announced = False


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not _world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_announced = False


def announce(info: Any) -> None:
    """Rank 0 tells the other processes which run they train (``None``: there is none,
    stop). Once per process; later calls do nothing, so every way out of rank 0's set-up
    can call it."""
    global _announced
    if _announced or not _world.active:
        return
    _announced = True
    broadcast(info)


def receive() -> Any:
    """A process other than rank 0: what rank 0 announced."""
    return broadcast(None)


def all_sum(*values: float | int | torch.Tensor, device: str = "cpu") -> list[float]:
    """Each value summed over all ranks (as float64)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if _world.active:
        dist.all_reduce(t)
    return t.tolist()


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    if not _world.active:
        return [obj]
    out: list[Any] | None = [None] * _world.size if _world.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def shard(order: torch.Tensor, w: World | None = None, pad: bool = True) -> torch.Tensor:
    """This rank's indices of ``order``: padded (by repeating its start) to a multiple of
    the world size when ``pad``, then every ``size``-th index from ``rank``."""
    w = w or _world
    if not w.active:
        return order
    if pad:
        extra = (-len(order)) % w.size
        if extra:
            order = torch.cat([order, order[:extra]])
    return order[w.rank::w.size]


def local_batch(batch_size: int, w: World | None = None) -> int:
    """Each rank's share of the global ``batch_size``; ``InputError`` if it does not
    divide evenly."""
    w = w or _world
    if batch_size % w.size:
        raise InputError(f"--batch-size {batch_size} is the global batch: it must divide "
                         f"evenly among the {w.size} processes")
    return batch_size // w.size
