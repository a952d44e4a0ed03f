"""Worker processes: how many processes decode, what the per-video stages' --workers 0 means,
the set-up of a decoding worker, and, for the training DataLoaders' workers, how a worker leaves
Ctrl-C to the main process. (The per-video stages' workers: dagr/supervised.py.)

Imports no project module.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any

import cv2

# what --workers 0 means, in every per-video stage's --help
MAIN_PROCESS_NOTE = ("0: in this process, which a native crash in a decoder ends (the run after "
                     "it hands the video it was on to a worker process)")


def quiet_worker(_: int = 0) -> None:
    """DataLoader worker set-up: Ctrl-C is left to the main process, which stops the
    workers; and when it stops one in the middle of handing over a tensor, the worker's
    multiprocessing thread that serves the hand-over loses its connection (EOFError,
    ConnectionError) and would print a traceback. Only those are silenced."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _quiet_hang_ups


def _quiet_hang_ups(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    if not isinstance(error, (EOFError, ConnectionError)):
        sys.__excepthook__(kind, error, trace)


def one_opencv_thread() -> None:
    """A decoding worker's set-up: one OpenCV thread (resizing, PNG coding) per process, as
    the processes are the parallelism."""
    cv2.setNumThreads(1)


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
