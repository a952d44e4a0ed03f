"""Run-time plumbing shared by every script: device, precision, seeding, atomic files,
checkpoints and torch.distributed set-up.

Imports no other project file.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


README_NOTE = "Every option, the file formats and the measured numbers: README.md."


def default_text(value: Any) -> str:
    """A default as a user would type it: a sequence as its items separated by spaces."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (the script's docstring) and every option's default after
    its help text, unless the text already states it, the default is None (nothing given
    means "not used", said in the text) or the option is a switch."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is argparse.SUPPRESS
                or not action.option_strings or isinstance(default, bool)
                or action.nargs == 0):
            return text
        shown = default_text(default).replace("%", "%%")  # argparse %-formats help texts
        return f"{text} (default: {shown})".lstrip()


def script_parser(description: str | None) -> argparse.ArgumentParser:
    """The parser every script starts from: its docstring as the description, HelpFormatter,
    and a closing line pointing to the README."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter,
                                   epilog=README_NOTE)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The one `--device` option every script exposes."""
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help=f"cuda, cuda:N or cpu (default: {DEFAULT_DEVICE})")


def pick_device(name: str | None = None) -> torch.device:
    """`cuda` when available else `cpu`; an explicit name wins, but asking for CUDA on a
    machine without it is an error rather than a silent fall-back."""
    device = torch.device(name or DEFAULT_DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but PyTorch sees no CUDA GPU here; "
                         "use --device cpu")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, plain fp32 elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state, for exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and folders: a reader never sees half of the output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller creates a file or a folder there
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_failures(path: str | os.PathLike, failures: dict[str, str], id_column: str) -> None:
    """Write `id_column,problem` rows (sorted by id) atomically; when nothing failed, write no
    file and remove one that an earlier run left."""
    path = Path(path)
    if not failures:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([id_column, "problem"])
        writer.writerows(sorted(failures.items()))


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_epoch_checkpoints(best: str | os.PathLike, last: str | os.PathLike,
                           payload: dict[str, Any], improved: bool) -> None:
    """Save an epoch's checkpoint as `last`, and first as `best` when the epoch improved.

    Best before last: a crash in between resumes from the previous `last` and redoes the
    epoch. When both are written they are one file under two names (a hard link, or a copy
    where the file system has none), which halves the disk and the time a save takes; the
    next epoch replaces `last` with a new file and leaves `best` as it is.
    """
    if not improved:
        save_checkpoint(last, payload)
        return
    save_checkpoint(best, payload)
    with atomic_path(last) as tmp:
        try:
            os.link(best, tmp)
        except OSError:
            shutil.copyfile(best, tmp)


RESUME_STATE = ("optimizer_state", "scheduler_state", "rng_state")  # what only --resume reads


def slim_checkpoints(best: str | os.PathLike, last: str | os.PathLike) -> None:
    """At the end of a run that will not be resumed: rewrite `best` without RESUME_STATE
    (the optimizer's moments are twice the model's size) and remove `last`."""
    payload = torch.load(best, map_location="cpu", weights_only=False)  # our own file
    save_checkpoint(best, {key: value for key, value in payload.items()
                           if key not in RESUME_STATE})
    Path(last).unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu",
                    kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, with a clear error (naming the file) if
    it is not one, or, when `kind` is given ("saliency", "quality"), not one of that kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict) or "model_state" not in payload:
        raise ValueError(f"{path}: not a DAGR-VQA checkpoint (no model_state)")
    if kind is not None and payload.get("kind") != kind:
        raise ValueError(f"{path}: this is a {payload.get('kind')!r} checkpoint, not a {kind} "
                         "checkpoint")
    payload["model_state"] = plain_state_dict(payload["model_state"])
    return payload


def resume_checkpoint(path: str | os.PathLike, kind: str) -> dict[str, Any] | None:
    """The checkpoint a `--resume` run continues from, or None when there is none yet: a run
    stopped before its first checkpoint starts again from the beginning (and says so)."""
    if not Path(path).is_file():
        print(f"note: {path} does not exist yet; starting from the first epoch", file=sys.stderr)
        return None
    return load_checkpoint(path, "cpu", kind)


def writable_folder(path: str | os.PathLike) -> Path:
    """Create the output folder `path` if needed and check that files can be written there,
    so that a run fails at its start rather than at its first save. Raises OSError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OSError(f"{path}: output folder cannot be written ({err.strerror or err})") from err
    return path


def plain_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a torchrun job (world 1 when run plainly)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group if there is one (NCCL on CUDA, Gloo on CPU).

    Returns the process's place and the device it should use (cuda:LOCAL_RANK on CUDA).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank), device


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- training plumbing

def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + np.cos(np.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class CsvLog:
    """One row per epoch in a CSV file that survives crashes: rows are flushed as written,
    and `resume_at(epoch)` drops rows written after the checkpoint a run resumes from."""

    def __init__(self, path: str | os.PathLike, fields: list[str]):
        self.path, self.fields = Path(path), fields

    def resume_at(self, epoch: int) -> None:
        """Keep only the rows of epochs before `epoch` (the next one to run)."""
        if not self.path.is_file():
            return
        import csv

        with open(self.path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < epoch]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        import csv

        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            handle.flush()
            os.fsync(handle.fileno())


def training_payload(model: torch.nn.Module, model_kwargs: dict[str, Any],
                     optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int,
                     metrics: dict[str, float], settings: dict[str, Any],
                     **extra: Any) -> dict[str, Any]:
    """Everything a checkpoint holds (SPEC section 10): enough to rebuild the model with no
    other file, and to resume training exactly. `epoch` is the number of finished epochs."""
    return {"model_kwargs": model_kwargs, "model_state": unwrap(model).state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "rng_state": rng_state(), "epoch": epoch, "metrics": metrics,
            "settings": settings, **extra}


def restore_training(payload: dict[str, Any], model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
    """Load a `training_payload` into a live run; returns the epoch to continue from."""
    unwrap(model).load_state_dict(payload["model_state"])
    optimizer.load_state_dict(payload["optimizer_state"])
    if scheduler is not None and payload.get("scheduler_state") is not None:
        scheduler.load_state_dict(payload["scheduler_state"])
    set_rng_state(payload["rng_state"])
    return int(payload["epoch"])


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
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   buffer)
        message = [buffer.getvalue()]
    tdist.broadcast_object_list(message, src=0)
    if not dist.is_main:
        state = torch.load(io.BytesIO(message[0]), map_location="cpu", weights_only=False)
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
