"""Training on several processes (gloo on the CPU): the gradient rule under DDP, a
2-process torchrun run against a 1-process run with the same global batch, rows written
once, a dead rank ending the run, and --resume across ranks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from xnorbench.db import Store
from xnorbench.distributed import World, local_batch, shard
from xnorbench.errors import InputError

from .conftest import make_mnist
from .helpers import cli_here

EPOCHS = 2
TRAIN = ["run", "accuracy", "--model", "lenet5", "--epochs", str(EPOCHS), "--batch-size", "32",
         "--device", "cpu", "--threads", "1", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_shards_cover_each_global_batch():
    """Rank r's k-th local batch and the others' make up exactly the k-th global batch of
    one process (so the gradient averaged by DDP is the one-process gradient)."""
    order = torch.randperm(37, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([order, order[:3]])  # 40 = a multiple of 4
    shards = [shard(order, World(r, 4)) for r in range(4)]
    assert all(len(s) == 10 for s in shards)
    b = 2  # local batch; the global batch is 8
    for k in range(5):
        together = torch.cat([s[k * b:(k + 1) * b] for s in shards])
        assert sorted(together.tolist()) == sorted(padded[8 * k:8 * (k + 1)].tolist())
    assert len(shard(order, World(3, 4), pad=False)) == 9  # evaluation: no repeats
    assert local_batch(32, World(0, 4)) == 8
    with pytest.raises(InputError, match="divide evenly"):
        local_batch(30, World(0, 4))


def _one_step(rank: int, world: int, port: int, path: str, xnor_paths: tuple[str, ...]
              ) -> None:
    """One SGD step of an XNOR LeNet-5 per XNOR path on rank ``rank``'s share of a global
    batch of 16; rank 0 saves the weights after each (``path`` + ``.<xnor path>``).

    In float64: a half batch and a whole batch may run other kernels (oneDNN picks by
    shape and CPU), whose float32 rounding (~1e-7) can flip the sign of a pre-activation
    within rounding of zero in an XNOR layer, after which the two steps differ by a whole
    sign's gradient; that happened on an Intel Xeon with AMX. At float64 the rounding is
    ~1e-16 and no pre-activation of these 16 random images sits that close to a
    threshold, so the comparison checks what it claims on every CPU: that DDP applies the
    gradient rule to the one-process gradient."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from xnorbench import distributed
    from xnorbench.training.loop import distribute
    from xnorbench.training.optim import make_optimizer
    from xnorbench.training.recipes import Recipe
    from xnorbench.training.setup import make_xnor_step
    from xnorbench.xnor.layers.step import train_step
    from xnorbench.xnor.networks import models

    w = distributed.setup("cpu") if world > 1 else distributed.world()
    for xnor_path in xnor_paths:
        torch.manual_seed(0)
        net = models.build("lenet5", binary=True).double()
        recipe = Recipe(lr=0.5, momentum=0.0, weight_decay=0.0, xnor_path=xnor_path)
        opt = make_optimizer(net, recipe)
        xnor_step = make_xnor_step(net, "xnor", recipe)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 1, 28, 28, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (16,), generator=g)
        net.eval()  # BatchNorm on running statistics: the same on every share of the batch
        idx = shard(torch.arange(16), w)
        train_step(distribute(net, recipe, "cpu", w), x[idx], y[idx], opt, xnor_step)
        flat = torch.cat([p.detach().flatten() for p in net.parameters()])
        every = distributed.gather_to_main(flat)
        if w.main:
            assert every is not None and all(torch.equal(every[0], t) for t in every[1:])
            torch.save({k: v.detach().clone() for k, v in net.state_dict().items()},
                       f"{path}.{xnor_path}")
    distributed.shutdown()


XNOR_PATHS = ("fused", "binop")


def test_gradient_rule_under_ddp_equals_one_process(tmp_path: Path):
    """The rule applied per rank before DDP averages (fused) or after (BinOp) gives the
    weights one process gets from the whole batch, identical on every rank (both paths
    in one launch of two processes)."""
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    _one_step(0, 1, 0, one, XNOR_PATHS)
    mp.spawn(_one_step, args=(2, free_port(), two, XNOR_PATHS), nprocs=2, join=True)
    for xnor_path in XNOR_PATHS:
        a = torch.load(f"{one}.{xnor_path}", weights_only=True)
        b = torch.load(f"{two}.{xnor_path}", weights_only=True)
        moved = 0
        for k in a:
            assert a[k].dtype in (torch.float64, torch.int64), k
            assert torch.allclose(a[k], b[k], atol=1e-12, rtol=1e-10), (xnor_path, k)
            moved += int(not torch.equal(a[k], torch.zeros_like(a[k])))
        assert moved > 0, xnor_path


TEARDOWN_ROUNDS = int(os.environ.get("XNORBENCH_TEARDOWN_ROUNDS", "1"))
"""Rounds of the teardown test. 1 in CI, beside the round of the same child the
gradient test above spawns: each round is two fresh processes (15 s a round on a 2-vCPU
Zen 3, 23 s beside the other test worker). Hunting the abort below, give
more (``XNORBENCH_TEARDOWN_ROUNDS=40``): it showed in about 1 round of 8 on the machine
where it was found, and in none of 16 rounds without the fix on a 2-vCPU AMD EPYC Zen 3
(7 December 2026), so a few rounds guard what they can here, and the torchrun tests
of this file, whose every process must exit 0, add theirs."""


def test_processes_exit_cleanly_after_a_ddp_run(tmp_path: Path):
    """The processes of a finished DDP run (a step, a gather to rank 0, shutdown) exit 0,
    round after round. Without the GIL hand-over in ``shutdown`` a gloo thread freeing
    the gather's work was ended by the interpreter's finalization and the process
    aborted (SIGABRT) in about 1 round of 8 on 2 vCPUs; torchrun reports that as a
    failed run."""
    for _ in range(TEARDOWN_ROUNDS):
        mp.spawn(_one_step, args=(2, free_port(), str(tmp_path / "w.pt"), ("fused",)),
                 nprocs=2, join=True)


def torchrun(db: str, n: int, *args: str, wait: bool = True, fault: str | None = None,
             timeout: float = 300) -> subprocess.Popen | tuple[int, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", XNORBENCH_HEARTBEAT_S="0.2",
               XNORBENCH_DIST_TIMEOUT_S="120", PYTHONUNBUFFERED="1")
    env.pop("XNORBENCH_FAULT", None)
    if fault:
        env["XNORBENCH_FAULT"] = fault
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
           "--master-port", str(port), "-m", "xnorbench", "--db", db, *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.master_port = port  # type: ignore[attr-defined]
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("ddp") / "data", n_train=640, n_test=96)


FLOAT_LOSS_TOLERANCE = 0.10
"""Relative agreement of the float network's per-epoch training loss, 2 processes vs 1
at the same global batch. Not exact: without SyncBatchNorm (CUDA only) each process
normalizes its half batch with its own statistics, a smooth perturbation of the
one-process step that a float network's loss follows smoothly (2-5 % here). The XNOR
network's loss is not compared: sign(x) turns the same perturbation into flipped
activations, after which the two trajectories are different trainings (a 22 % gap at
epoch 2 on an AMD Zen 1, deterministic there); that DDP computes the XNOR gradient of
one process exactly is :func:`test_gradient_rule_under_ddp_equals_one_process`."""


def test_two_processes_match_one_and_write_each_row_once(tmp_path: Path, data: Path):
    """Sharding and row ownership: rank 1 writes nothing, rank 0 every row once, the test
    set is evaluated whole (gathered over ranks), and the float network trains like
    the one-process run on the same global batches."""
    db = str(tmp_path / "ddp.db")
    rc, out = torchrun(db, 2, *TRAIN, "--data-dir", str(data))
    assert rc == 0, out
    rc, out = cli_here(db, *TRAIN, "--data-dir", str(data))  # one process: this one
    assert rc == 0, out
    store = Store.open(db)
    two, one = store.run(1), store.run(2)
    assert two.status == one.status == "finished"
    assert (two.context["world_size"], two.context["backend"]) == (2, "gloo")
    counts = Counter((r.metric, r.variant, r.epoch) for r in store.results([1]))
    assert counts == Counter((r.metric, r.variant, r.epoch) for r in store.results([2]))
    assert set(counts.values()) == {1}  # rank 1 wrote nothing
    for epoch in range(1, EPOCHS + 1):
        (a,) = store.results([1], metric="train_loss", variant="float", epoch=epoch)
        (b,) = store.results([2], metric="train_loss", variant="float", epoch=epoch)
        assert abs(a.value - b.value) <= FLOAT_LOSS_TOLERANCE * max(b.value, 1e-3), \
            (epoch, a.value, b.value)
    for variant in ("float", "xnor"):
        (acc,) = store.results([1], metric="final_test_accuracy", variant=variant)
        assert acc.params["world_size"] == 2 and acc.params["test_size"] == 96
    (acc,) = store.results([1], metric="final_test_accuracy", variant="float")
    assert acc.value > 50
    # the simulated predictions gathered from both ranks, in test order, against rank
    # 0's packed network on the whole test set: the same network on the same images
    # agrees but for rounding ties; a gather out of order would compare different
    # images (agreement at the level of two images sharing a class, well below 90 %)
    (packed,) = store.results([1], metric="packed_agreement", variant="xnor")
    assert packed.value >= 90


def _rank_pid(launch: subprocess.Popen, rank: int) -> int:
    """The pid of the worker with RANK=rank that this torchrun launch started."""
    want = {f"RANK={rank}".encode(), f"MASTER_PORT={launch.master_port}".encode()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= env:
            return int(pid)
    raise AssertionError(f"no worker with RANK={rank}")


def test_a_dead_rank_ends_the_run(tmp_path: Path, data: Path):
    db = str(tmp_path / "dead.db")
    proc = torchrun(db, 2, *TRAIN, "--epochs", "40", "--data-dir", str(data), wait=False)
    deadline = time.time() + 120
    while time.time() < deadline:
        with contextlib.suppress(Exception):  # the launch may still be creating the db
            if Store.open(db).results(metric="test_accuracy"):
                break
        time.sleep(0.3)
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    t0 = time.time()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.time() - t0 < 90, "the surviving rank was not stopped in time"
    run = Store.open(db).run(1)
    assert run.status in ("interrupted", "failed"), (run.status, out.decode()[-2000:])


def test_resume_across_ranks(tmp_path: Path, data: Path):
    """Rank 0 killed after epoch 1's rows: torchrun stops rank 1; after mark-stale the
    run resumes on two processes from the checkpoint and ends with every row once."""
    from typer.testing import CliRunner

    from xnorbench.cli import app

    db = str(tmp_path / "res.db")
    rc, out = torchrun(db, 2, *TRAIN, "--epochs", "3", "--data-dir", str(data),
                       fault="KILL@after:test_accuracy#2")
    assert rc != 0, out
    time.sleep(1.0)
    res = CliRunner().invoke(app, ["--db", db, "runs", "mark-stale", "--minutes", "0.01"])
    assert "[1]" in res.output, res.output
    rc, out = cli_here(db, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 2 and "trained on 2 process(es)" in out, out  # refused on one process
    rc, out = torchrun(db, 2, "run", "accuracy", "--resume", "1", "--no-progress")
    assert rc == 0, out
    store = Store.open(db)
    assert store.run(1).status == "finished"
    counts = Counter((r.metric, r.variant, r.epoch) for r in store.results([1]))
    assert set(counts.values()) == {1}
    assert {e for (m, v, e) in counts if m == "test_accuracy" and v == "xnor"} == {1, 2, 3}


def make_varied_tree(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    """An ImageFolder tree (train/ and val/) of RGB images of different sizes."""
    from PIL import Image

    g = torch.Generator().manual_seed(2)
    sizes = [(48, 64), (60, 40), (52, 52)]
    for split, n in (("train", per_class), ("val", 2)):
        for k in range(classes):
            d = root / split / f"n{k:04d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = sizes[(i + k) % len(sizes)]
                img = torch.randint(0, 80, (h, w, 3), generator=g, dtype=torch.uint8)
                img[:, :, k % 3] = 200
                Image.fromarray(img.numpy()).save(d / f"{i}.jpg")
    return root


def test_imagenet_resnet18_trains_float_and_xnor(tmp_path: Path, monkeypatch):
    """The ImageNet path end to end on a tiny tree of mixed image sizes: 224 crops read
    per batch, float and XNOR, top-1 and top-5 rows, the packed network included."""
    from typer.testing import CliRunner

    from xnorbench.cli import app

    monkeypatch.setenv("XNORBENCH_LOADER_WORKERS", "0")
    tree = make_varied_tree(tmp_path / "tree")
    db = str(tmp_path / "in.db")
    res = CliRunner().invoke(app, ["--db", db, "run", "accuracy", "--recipe",
                                   "resnet18-imagenet", "--epochs", "1", "--batch-size", "4",
                                   "--data-dir", str(tree), "--device", "cpu",
                                   "--threads", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    assert store.run(1).status == "finished"
    for variant in ("float", "xnor"):
        (top5,) = store.results([1], metric="final_test_top5_accuracy", variant=variant)
        (top1,) = store.results([1], metric="final_test_accuracy", variant=variant)
        assert top5.value == 100.0 and 0 <= top1.value <= 100  # 3 classes: top-5 is all
        (row,) = store.results([1], metric="test_top5_accuracy", variant=variant, epoch=1)
        assert row.params["augment"] == "random-resized-crop+flip"
    (agree,) = store.results([1], metric="packed_agreement")
    assert agree.value is not None
    (size,) = store.results([1], metric="dataset_size")
    assert size.value == 12 and size.params["classes"] == ["n0000", "n0001", "n0002"]
