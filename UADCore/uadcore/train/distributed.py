"""PyTorch DDP as `torchrun` starts it: one process per GPU (or CPU worker, gloo),
rank 0 writes. Without torchrun everything here is a no-op; under torchrun the
process group is joined also with a single rank, so a one-GPU machine runs (and
checks) the very NCCL path that many GPUs run."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    grouped: bool = False  # started by torchrun: in a process group (DDP, collectives)

    @property
    def enabled(self) -> bool:
        return self.grouped

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def workers_each(self) -> int | None:
        """Processes preparing scans for each rank: the machine's cores shared among
        its ranks (torchrun's LOCAL_WORLD_SIZE); None (one per core) for one process."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if self.grouped else 1
        return max(1, (os.cpu_count() or 1) // local) if local > 1 else None


def start(device: str | torch.device) -> Ranks:
    """Join the process group torchrun set up (env://): NCCL on GPUs, gloo on CPUs.
    ``device``: the run's device name ("auto", "cpu", "cuda") or `torch.device`."""
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:  # not started by torchrun
        return Ranks()
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    use_cuda = kind == "cuda" or (kind == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), grouped=True)


def stop(ranks: Ranks) -> None:
    """Leave the process group. The models wrapped in DDP are collected first: a
    reducer that outlives the group is destroyed during the interpreter's shutdown,
    where gloo's threads can end the process with SIGABRT ("terminate called without
    an active exception", seen once in CI on the rank that finished first)."""
    if ranks.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(ranks: Ranks, device) -> None:
    """Wait until every rank is here (through ``device``, as every collective)."""
    any_rank(False, ranks, device)


def agree(ok: bool, ranks: Ranks, device, what: str) -> None:
    """A collective check: every rank raises when any rank reports a failure, so no
    rank waits forever in a later collective for one that gave up."""
    if ranks.enabled and any_rank(not ok, ranks, device) and ok:
        raise RuntimeError(f"another rank failed: {what}")


def sum_across(tensor: torch.Tensor, ranks: Ranks, device) -> torch.Tensor:
    """Element-wise sum over ranks, in place (through ``device``: NCCL reduces only
    GPU tensors); the tensor is returned."""
    if ranks.enabled:
        on_device = tensor.to(device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        tensor.copy_(on_device.cpu())
    return tensor


def any_rank(flag: bool, ranks: Ranks, device) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    if not ranks.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def shard(order: torch.Tensor, ranks: Ranks) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of a global sample order, and which of its entries are real.

    Rank r takes positions r, r + W, r + 2W, ... so that its k-th batch of
    ``batch_size // W`` and the other ranks' k-th batches together are exactly the
    k-th batch of ``batch_size`` a single process would take. The order is padded by
    wrapping around to a multiple of W so every rank runs as many steps; padding
    entries are marked False and must not count in the loss.

    Returns (local order (L,), real (L,) bool).
    """
    real = torch.ones(len(order), dtype=torch.bool)
    if not ranks.enabled:
        return order, real
    padded = -(-len(order) // ranks.world) * ranks.world
    if padded > len(order):
        order = torch.cat([order, order[: padded - len(order)]])
        real = torch.cat([real, torch.zeros(padded - len(real), dtype=torch.bool)])
    return order[ranks.rank :: ranks.world], real[ranks.rank :: ranks.world]
