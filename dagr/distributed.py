"""torch.distributed for the trainers: joining a torchrun job, sharded sampling, DDP wrapping
and the collectives the training loop uses (dagr/training.py).

One process per GPU; `python train_sal.py ...` is a job of one process, and every function here
then does what a plain process needs (nothing, or its own value).
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from dagr.checkpoints import plain_values


# ----------------------------------------------------------------------------- torch.distributed

@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a torchrun job (world 1 when run plainly)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # in a process group (torchrun), even a one-process one

    @property
    def enabled(self) -> bool:
        return self.joined or self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group if there is one (NCCL on CUDA, Gloo on CPU).

    Returns the process's place and the device it should use (cuda:LOCAL_RANK on CUDA).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # a one-process torchrun joins a group too: DDP, NCCL and SyncBatchNorm then run on one GPU
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Distributed(), device
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, joined=True), device


@contextlib.contextmanager
def distributed_job(device: torch.device) -> Iterator[tuple[Distributed, torch.device]]:
    """`init_distributed` for the length of a run: yields (place, device), and the process
    group is closed on the way out however the run ends."""
    dist, device = init_distributed(device)
    try:
        yield dist, device
    finally:
        close_distributed()


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- sharded training

class ShardSampler(torch.utils.data.Sampler):
    """Every index exactly once per epoch across the ranks of a job (rank r takes every
    world-th index of a seeded permutation), unlike DistributedSampler, which pads
    shards with repeats. Shards may differ in length by one: train under DDP's `join()`."""

    def __init__(self, size: int, dist: Distributed, shuffle: bool = True, seed: int = 0):
        self.size, self.dist, self.shuffle, self.seed = size, dist, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        return order[self.dist.rank::self.dist.world].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(range(self.dist.rank, self.size, self.dist.world))


def wrap_for_training(model: torch.nn.Module, dist: Distributed, device: torch.device,
                      sync_batchnorm: bool = False) -> torch.nn.Module:
    """DistributedDataParallel when running under torchrun (optionally SyncBatchNorm, which
    PyTorch runs on GPUs only)."""
    model = model.to(device)
    if not dist.enabled:
        return model
    if sync_batchnorm and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU")
    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def join_context(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """DDP's join for uneven shards; nothing when not distributed. In a step that only some
    ranks take (the last of an epoch), the gradient is the mean over those ranks, as in a
    single process given the same samples; at the end the ranks' weights are made equal."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.join(divide_by_initial_world_size=False)
    return contextlib.nullcontext()


def batches_per_epoch(loader: torch.utils.data.DataLoader, dist: Distributed) -> int:
    """Batches per epoch of the longest shard: what a learning-rate schedule must plan for,
    so that every rank follows the same one."""
    return max(gather_objects(len(loader), dist))


def sync_optimizer(optimizer: torch.optim.Optimizer, scheduler: Any, dist: Distributed) -> None:
    """After an epoch, give every rank rank 0's optimizer and scheduler states if the ranks
    took different numbers of steps (uneven shards under `join_context`).

    Join makes the weights equal at the end of the epoch, but a rank that ran out of batches
    skipped the last steps: its Adam moments and schedule would lag, and the ranks' weights
    would drift apart in the next epoch. Rank 0 holds the longest shard, so it took them all.
    """
    if not dist.enabled or len(set(gather_objects(scheduler.last_epoch, dist))) == 1:
        return
    import torch.distributed as tdist

    message: list[Any] = [None]
    if dist.is_main:
        buffer = io.BytesIO()
        torch.save(plain_values({"optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict()}), buffer)
        message = [buffer.getvalue()]
    tdist.broadcast_object_list(message, src=0)
    if not dist.is_main:
        state = torch.load(io.BytesIO(message[0]), map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])


def gather_objects(obj: Any, dist: Distributed) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank ([obj] when not distributed)."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as tdist

    out: list[Any] = [None] * dist.world
    tdist.all_gather_object(out, obj)
    return out

