"""Run-time plumbing shared by every script: device, precision, seeding, atomic files,
checkpoints and torch.distributed set-up.

Imports no other project file.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import pickle
import random
import re
import shutil
import signal
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NoReturn

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


# ----------------------------------------------------------------------------- precision, compile
# The one policy every script follows (README "Precision, compile and the GPU check"): bf16
# autocast by default on CUDA, fp32 on the CPU; bf16 on the CPU too when asked, which runs
# natively only where the CPU has bf16 instructions (AVX512-BF16 or AMX) and is emulated, and
# slow, elsewhere.

PRECISIONS = ("fp32", "bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bf16 hardware
_EMULATION_WARNED = []
COMPILE_BACKEND_VARIABLE = "DAGR_COMPILE_BACKEND"


def default_precision(device: torch.device | str) -> str:
    """bf16 on CUDA, fp32 elsewhere."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """`precision` checked, or the device's default when None; says once on stderr when bf16
    is asked for on a CPU without native bf16."""
    precision = precision or default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if (precision == "bf16" and torch.device(device).type == "cpu" and not cpu_has_native_bf16()
            and not _EMULATION_WARNED):
        _EMULATION_WARNED.append(True)
        print("note: this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated "
              "and much slower than fp32", file=sys.stderr)
    return precision


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(flags: set[str], capability: str) -> bool:
    """Whether a CPU with these /proc/cpuinfo `flags` and this
    torch.backends.cpu.get_cpu_capability() runs bf16 natively: the flags decide where they
    are known; without them (no /proc/cpuinfo), PyTorch's AMX kernels tell."""
    if flags:
        return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    return "AMX" in capability.upper()


def cpu_has_native_bf16() -> bool:
    """`native_bf16` of this machine's CPU."""
    return native_bf16(cpu_flags(), torch.backends.cpu.get_cpu_capability())


def native_precisions(device: torch.device | str) -> tuple[list[str], dict[str, str]]:
    """(precisions `device` runs natively, {skipped precision: why}): every one on CUDA; on
    the CPU bf16 only where it has bf16 instructions."""
    if torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        return ["fp32"], {"bf16": "no AVX512-BF16 or AMX on this CPU: bf16 would be emulated "
                                  "(ask for it with --precisions fp32 bf16)"}
    return list(PRECISIONS), {}


def add_precision_arguments(parser: argparse.ArgumentParser, what: str = "the networks") -> None:
    """The `--precision` and `--compile` options every script takes the same way."""
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="bf16 (autocast) or fp32 (default: bf16 on CUDA, fp32 on the CPU; "
                             "on a CPU, bf16 pays only where it has AVX512-BF16 or AMX, see the "
                             "README)")
    parser.add_argument("--compile", action="store_true",
                        help=f"torch.compile {what} (the first batches then take a while; pays "
                             "on GPUs for long runs)")


def precision_autocast(device: torch.device | str, precision: str
                       ) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`'s type for "bf16", nothing for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def bf16_backward_guard(device: torch.device | str, precision: str
                        ) -> contextlib.AbstractContextManager:
    """Wrap a backward pass of a network with Conv3d: on the CPU in bf16, oneDNN is switched
    off so that PyTorch's own kernels compute it. oneDNN's bf16 Conv3d weight gradient is
    sometimes NaN for inputs of depth 2 (torch 2.14.1 on an AVX512-BF16 CPU: about one call in
    three; seen in tests/test_precision.py), and the UNet3D's deeper levels always have such
    inputs. Nothing changes elsewhere."""
    if torch.device(device).type == "cpu" and precision == "bf16":
        return _without_onednn()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _without_onednn() -> Iterator[None]:
    with warnings.catch_warnings():
        # switching the flags re-sets oneDNN's TF32 option, which warns on every CPU build
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def compile_model(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` when `enabled`, else `model`; `unwrap` and `plain_state_dict`
    see through it, so checkpoints load into a plain model. The backend is inductor unless the
    environment variable COMPILE_BACKEND_VARIABLE names another (the CPU check uses
    "aot_eager": the same graph capture and autograd tracing without inductor's C++ code
    generation, which takes minutes per network on a 2-core CPU)."""
    if not enabled:
        return model
    return torch.compile(model, backend=os.environ.get(COMPILE_BACKEND_VARIABLE, "inductor"))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state, for exact resume, in plain values and tensors only
    (what `torch.load(weights_only=True)` reads back): NumPy's key array becomes a list."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, keys.tolist(), int(position), int(has_gauss), float(cached)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
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


def remove_leftovers(paths: Iterable[str | os.PathLike]) -> None:
    """Remove what `atomic_path(path)` blocks for `paths` left behind when their process was
    stopped inside them (their temporary siblings `.<name>.<random>.tmp`); one listing per
    folder, however many paths."""
    names: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        names.setdefault(path.parent, set()).add(path.name)
    for folder, wanted in names.items():
        if not folder.is_dir():
            continue
        for tmp in folder.iterdir():
            if not (tmp.name.startswith(".") and tmp.name.endswith(".tmp")
                    and tmp.name[1:-4].rsplit(".", 1)[0] in wanted):
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Failure:
    """Why one input failed: `kind` (a short tag such as `no-video-stream`) and `problem`
    (one line naming the file); prints as the problem."""
    kind: str
    problem: str

    def __str__(self) -> str:
        return self.problem


def write_failures(path: str | os.PathLike, failures: dict[str, Failure | str],
                   id_column: str) -> None:
    """Write `id_column,kind,problem` rows (sorted by id) atomically; a plain string counts
    as kind `error`. When nothing failed, write no file and remove one that an earlier run
    left."""
    path = Path(path)
    if not failures:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([id_column, "kind", "problem"])
        for key, failure in sorted(failures.items()):
            failure = failure if isinstance(failure, Failure) else Failure("error", str(failure))
            writer.writerow([key, failure.kind, failure.problem])


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
    payload = load_checkpoint(best)
    save_checkpoint(best, {key: value for key, value in payload.items()
                           if key not in RESUME_STATE})
    Path(last).unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu",
                    kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, with a clear error (naming the file) if
    it is not one, or, when `kind` is given ("saliency", "quality"), not one of that kind.

    Only tensors and plain values are unpickled (`weights_only=True`): a file that holds any
    other object is refused before that object is built, so a crafted file runs no code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    payload = _load_plain(path, device)
    if not isinstance(payload, dict) or not isinstance(payload.get("model_state"), dict):
        raise ValueError(f"{path}: not a DAGR-VQA checkpoint (no model_state)")
    if not all(isinstance(v, torch.Tensor) for v in payload["model_state"].values()):
        raise ValueError(f"{path}: not a DAGR-VQA checkpoint (its model_state holds non-tensors)")
    if kind is not None and payload.get("kind") != kind:
        raise ValueError(f"{path}: this is a {payload.get('kind')!r} checkpoint, not a {kind} "
                         "checkpoint")
    payload["model_state"] = plain_state_dict(payload["model_state"])
    return payload


def _load_plain(path: Path, device: torch.device | str) -> Any:
    """torch.load with weights_only=True; every failure becomes one ValueError line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on a foreign pickle protocol
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:  # an instruction the safe unpickler does not take: not torch.save's
            raise ValueError(f"{path}: not a readable checkpoint (not written by torch.save, "
                             "or damaged)") from err
        raise ValueError(f"{path}: refused: it holds objects other than tensors and plain "
                         f"values ({found.group(1)}), which could run code when loaded; a "
                         "DAGR-VQA checkpoint holds none") from err
    except Exception as err:  # torch raises many kinds for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (torch's run over many lines)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


RESUME_KEYS = ("optimizer_state", "rng_state", "epoch")


def resume_checkpoint(path: str | os.PathLike, kind: str) -> dict[str, Any] | None:
    """The checkpoint a `--resume` run continues from, or None when there is none yet: a run
    stopped before its first checkpoint starts again from the beginning (and says so)."""
    if not Path(path).is_file():
        print(f"note: {path} does not exist yet; starting from the first epoch", file=sys.stderr)
        return None
    payload = load_checkpoint(path, "cpu", kind)
    missing = [k for k in RESUME_KEYS if k not in payload]
    if missing:
        raise ValueError(f"{path}: cannot resume from it: no {', '.join(missing)} (not a "
                         "training checkpoint)")
    return payload


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
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
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
    other file, and to resume training exactly. `epoch` is the number of finished epochs.
    Tensors and plain values only (`plain_values`), so that it loads with weights_only; the
    model's state dict is kept as it is (its version metadata guides `load_state_dict`)."""
    return {"model_state": unwrap(model).state_dict(), **plain_values({
        "model_kwargs": model_kwargs, "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "rng_state": rng_state(), "epoch": epoch, "metrics": metrics, "settings": settings,
        **extra})}


def plain_values(value: Any) -> Any:
    """`value` with paths as strings and NumPy scalars and arrays as Python numbers and lists,
    through dicts, lists and tuples: what `torch.load(weights_only=True)` reads back."""
    if isinstance(value, dict):
        return {key: plain_values(item) for key, item in value.items()}
    if type(value) in (list, tuple):  # named tuples are left alone
        return type(value)(plain_values(item) for item in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def restore_training(payload: dict[str, Any], model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any,
                     path: str | os.PathLike = "checkpoint") -> int:
    """Load a `training_payload` (read from `path`) into a live run; returns the epoch to
    continue from. ValueError naming `path` when it does not fit the run."""
    try:
        unwrap(model).load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        if scheduler is not None and payload.get("scheduler_state") is not None:
            scheduler.load_state_dict(payload["scheduler_state"])
        set_rng_state(payload["rng_state"])
        return int(payload["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot resume this run from it, it was written with other "
                         f"options ({_first_line(err)})") from err


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


# ----------------------------------------------------------------------------- Ctrl-C and workers

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying one line that says what was kept and how to go on."""


def run_script(main: Callable[[], int]) -> NoReturn:
    """Every script's `if __name__ == "__main__":` entry: exit with main()'s status, or, on
    Ctrl-C, with one line on stderr (an `Interrupted`'s message) and status 130 instead of a
    traceback. The stages write every output atomically, so what an interrupted run leaves is
    finished work only."""
    try:
        code = main()
    except KeyboardInterrupt as err:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not add a traceback
        message = str(err) if isinstance(err, Interrupted) and str(err) else \
            "stopped before the end; finished work is kept (run again to continue)"
        print(f"\ninterrupted: {message}", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C while worker processes start inside the block. They inherit the ignored
    signal (Python keeps an inherited SIG_IGN), so a Ctrl-C reaches only the main process,
    which stops them in order: no worker prints a traceback, even while it is still importing."""
    if signal.getsignal(signal.SIGINT) is None:  # not set from Python: leave it alone
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def available_cores() -> int:
    """The cores this process may use, shared among the processes torchrun starts on the
    machine (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def default_workers(items: int) -> int:
    """Decoding processes by default: the available cores, at most one per item, and none
    (decode in this process) for a single item. PyTorch warns above the cores; starting more
    only costs time."""
    return 0 if items <= 1 else min(available_cores(), items)
