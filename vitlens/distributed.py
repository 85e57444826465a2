"""Scale-out with torchrun: `torchrun --nproc-per-node N -m vitlens run ...`.

torchrun starts N processes with RANK/WORLD_SIZE set; `init_from_env` joins them (gloo on CPU,
NCCL on GPU). Analyses then split their work over the ranks:
  * independent pieces (the spectrum's minibatches, landscape grid points) are dealt out round-robin
    (`shard`) and the rows are gathered back (`gather`);
  * data-set-level Hessian-vector products run on each rank's share of the batches and are summed
    across ranks (`all_reduce_sum`), inside `sharded_data()`.
Rank 0 writes the Result to the cache and to --out. With one process every helper is a no-op.
`session` wraps a whole command: every rank waits for the others, then leaves the process group, so
no rank exits while a peer still holds its connection.
"""
from __future__ import annotations

import contextlib
import os
import threading

import torch
import torch.distributed as dist

_STATE = threading.local()


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not running under torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: torch.device | None = None) -> bool:
    """Join the process group torchrun describes in the environment; False when there is none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    use_cuda = device is not None and device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return True


@contextlib.contextmanager
def session(device: torch.device | None = None):
    """Join torchrun's process group (if any) for the block, and leave it cleanly at the end.

    A gloo rank that exits without `destroy_process_group` can die in its background thread
    ("terminate called without an active exception", SIGABRT) when a peer closes first: a few
    per cent of CPU runs did. After a normal end every rank meets at a barrier (so rank 0 has
    written the Result) and destroys the group; after an error the group is destroyed at once,
    since the other ranks may never reach a barrier (torchrun then stops them)."""
    joined = init_from_env(device)
    try:
        yield joined
        if joined:
            dist.barrier()
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def shard(count: int) -> list[int]:
    """The indices 0..count-1 this rank handles (round-robin)."""
    rank, size = world()
    return list(range(rank, count, size))


def gather(obj):
    """Every rank's OBJ, in rank order (a one-element list without torchrun)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, src: int = 0):
    """OBJ from rank SRC on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum TENSOR over ranks, in place, when the data is sharded (see `sharded_data`)."""
    if data_is_sharded():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@contextlib.contextmanager
def sharded_data():
    """Within this block, Hessian operators see only this rank's batches and sum across ranks."""
    previous = getattr(_STATE, "sharded", False)
    _STATE.sharded = world()[1] > 1
    try:
        yield
    finally:
        _STATE.sharded = previous


def data_is_sharded() -> bool:
    return getattr(_STATE, "sharded", False)
