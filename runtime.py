"""Run-time plumbing shared by every script: device, help texts, seeding, atomic files,
checkpoints, Ctrl-C and worker counts. Precision and compile are in precision.py; the
torch.distributed set-up and training-loop plumbing in training.py.

Imports no other project file.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
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
        raise ValueError(f"{path}: not a readable checkpoint ({first_line(err)})") from err


def first_line(err: BaseException) -> str:
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


def quiet_worker(_: int = 0) -> None:
    """DataLoader worker set-up: Ctrl-C is left to the main process, which stops the
    workers; and when it stops one in the middle of handing over a tensor, the worker's
    multiprocessing thread that serves the hand-over loses its connection (EOFError,
    ConnectionError) and would print a traceback. Only those are silenced."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _quiet_hang_ups


def stop_workers(batches: Any) -> None:
    """Stop the worker processes of a DataLoader iterator (`iter(loader)`, or None) now, in
    order, rather than at interpreter exit, where PyTorch's clean-up of a loader stopped by
    Ctrl-C can print a traceback or abort. PyTorch has no public call for this."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _quiet_hang_ups(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    if not isinstance(error, (EOFError, ConnectionError)):
        sys.__excepthook__(kind, error, trace)


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
