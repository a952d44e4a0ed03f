"""Worker processes and Ctrl-C: how many processes decode, how a worker leaves Ctrl-C to the
main process, and how the main process stops a DataLoader's workers in order.

Imports no project module.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Iterator


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
