"""Faults to inject into worker processes (tests/test_supervised.py, tests/test_containment.py):
what a native decoder can do to the process that runs it, on demand."""
from __future__ import annotations

import os
import signal
import time

from dagr import worker_side

FAULTS = ("segv", "abort", "exit", "hang", "oom-kill")


def strike(fault: str) -> None:
    """Do to this process what `fault` says: a segmentation fault, an abort (SIGABRT), exit
    status 1 without clean-up, a hang (a sleep far past any test's time limit), or the
    kernel's OOM kill (SIGKILL)."""
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "abort":
        os.abort()
    elif fault == "exit":
        os._exit(1)
    elif fault == "hang":
        time.sleep(3600)
    elif fault == "oom-kill":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise ValueError(f"unknown fault {fault!r}")


def behave(item: tuple[str, str | None]) -> tuple[str, int]:
    """(name, fault) -> (name, this process's id), after striking the fault if there is one.
    `slow:S` takes S seconds, reporting progress every 0.1 s; `unlimited:S` sleeps S seconds
    in a block that does not count against the limit; `raise` raises ValueError."""
    name, fault = item
    if fault and fault.startswith("slow:"):
        end = time.monotonic() + float(fault.split(":")[1])
        while time.monotonic() < end:
            time.sleep(0.1)
            worker_side.progress()
    elif fault and fault.startswith("unlimited:"):
        with worker_side.unlimited():
            time.sleep(float(fault.split(":")[1]))
    elif fault == "raise":
        raise ValueError(f"{name}: not a video")
    elif fault:
        strike(fault)
    return name, os.getpid()


def refuse_to_start() -> None:
    """A worker set-up that fails."""
    raise FileNotFoundError("model.pt: no such file")
