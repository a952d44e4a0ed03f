"""dagr/supervised.py: worker processes that die or hang take only their item with them. Each
fault of tests/faults.py is struck in a worker on a chosen item; that item comes back as a
Failure of kind `crashed` (with the signal or the exit status) or `timed-out`, every other item
comes back done, and no worker process outlives the map."""
from __future__ import annotations

import _thread
import os
import threading
import time

import pytest

from dagr import supervised
from dagr.failures import Failure
from dagr.supervised import (CRASHED, TIMED_OUT, Journal, Supervision, WorkerError, WorkerPool,
                             supervised_map)
from faults import behave, refuse_to_start

LIMIT = 2.0  # seconds without progress; the hang sleeps for an hour

EXPECTED = {
    "segv": (CRASHED, "died of SIGSEGV (Segmentation fault)"),
    "abort": (CRASHED, "died of SIGABRT (Aborted)"),
    "exit": (CRASHED, "exited with status 1"),
    "oom-kill": (CRASHED, "was killed (SIGKILL; the kernel's out-of-memory killer sends it"),
    "hang": (TIMED_OUT, f"no progress for {LIMIT:g} s"),
}


def first(item: tuple) -> str:
    return item[0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("fault", [pytest.param(fault, marks=pytest.mark.slow) if fault == "hang"
                                   else fault for fault in sorted(EXPECTED)])  # a hang waits
def test_a_fault_in_a_worker_fails_that_item_only(fault):
    items = [("a", None), ("b", None), (f"bad {fault}", fault), ("c", None), ("d", None)]
    out = dict(supervised_map(behave, items, Supervision(2, timeout=LIMIT), name=first))
    failure = out.pop((f"bad {fault}", fault))
    kind, words = EXPECTED[fault]
    assert isinstance(failure, Failure) and failure.kind == kind
    assert failure.problem.startswith(f"bad {fault}: ") and words in failure.problem
    assert sorted(name for name, _ in out.values()) == ["a", "b", "c", "d"]
    assert not any(alive(pid) for _, pid in out.values())  # every worker ended with the map


@pytest.mark.slow
def test_every_fault_in_one_run_in_order_with_replacement_workers():
    faults = sorted(EXPECTED)
    items = [(f"v{i}", fault) for i, fault in enumerate([None, *faults, None, None])]
    start = time.monotonic()
    out = list(supervised_map(behave, items, Supervision(2, timeout=LIMIT), name=first,
                              ordered=True))
    assert [item for item, _ in out] == items
    kinds = [o.kind if isinstance(o, Failure) else "done" for _, o in out]
    assert kinds == ["done", *(EXPECTED[f][0] for f in faults), "done", "done"]
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_a_slow_item_that_makes_progress_is_not_a_hang():
    """The limit counts from the last progress, not from the start: an item (a long video)
    may take many times the limit."""
    items = [("long", f"slow:{3 * LIMIT}"), ("network", f"unlimited:{2 * LIMIT}")]
    out = dict(supervised_map(behave, items, Supervision(2, timeout=LIMIT), name=first))
    assert sorted(name for name, _ in out.values()) == ["long", "network"]


def test_an_exception_in_a_worker_is_raised_here_with_its_traceback():
    with pytest.raises(ValueError, match="x: not a video") as raised:
        list(supervised_map(behave, [("x", "raise")], Supervision(1), name=first))
    assert any("raised in a worker process" in note and "faults.py" in note
               for note in raised.value.__notes__)


def test_a_setup_that_fails_stops_the_map_naming_why():
    with pytest.raises(WorkerError, match="could not set up: FileNotFoundError: model.pt"):
        list(supervised_map(behave, [("x", None)], Supervision(1), setup=refuse_to_start))


def test_stopping_early_kills_the_workers_at_once():
    items = [("a", None), ("h1", "hang"), ("h2", "hang"), ("h3", "hang")]
    mapped = supervised_map(behave, items, Supervision(2, timeout=3600), name=first)
    (_, (_, pid)) = next(mapped)
    start = time.monotonic()
    mapped.close()
    assert time.monotonic() - start < 10 and not alive(pid)


def test_a_pool_keeps_its_workers_from_one_map_to_the_next():
    with WorkerPool(behave, Supervision(2)) as pool:
        first_pids = {pid for _, (_, pid) in pool.map([("a", None), ("b", None)])}
        second_pids = {pid for _, (_, pid) in pool.map([("c", None), ("d", None)])}
    # the first map may finish on one worker before the other is ready; new workers for the
    # second map would make more than two processes in all
    assert len(first_pids | second_pids) <= 2
    assert not any(alive(pid) for pid in first_pids | second_pids)


def test_in_this_process_the_item_in_hand_is_journalled(tmp_path, monkeypatch):
    journal = Journal(tmp_path / ".in-flight")
    seen = []

    def record(item):
        seen.append(journal.left_behind())  # written down before the item starts
        return behave(item)

    out = list(supervised_map(record, [("a", None), ("b", None)], Supervision(0, journal=journal),
                              name=first))
    assert seen == ["a", "b"] and [pid for _, (_, pid) in out] == [os.getpid()] * 2
    assert journal.left_behind() is None  # removed when each item ends
    with pytest.raises(ValueError):  # a Python exception is no crash: nothing left behind
        list(supervised_map(behave, [("x", "raise")], Supervision(0, journal=journal),
                            name=first))
    assert journal.left_behind() is None


def test_a_rerun_after_a_crash_in_this_process_handles_that_item_in_a_worker(tmp_path, capsys):
    """A native crash in this process leaves the item's name in the journal; the next run
    hands every item to a worker process, where the crash is contained."""
    journal = Journal(tmp_path / ".in-flight")
    journal.enter("b")  # what a run that died on b leaves behind
    items = [("a", None), ("b", "segv"), ("c", None)]
    out = dict(supervised_map(behave, items, Supervision(0, journal=journal), name=first))
    assert out[("b", "segv")].kind == CRASHED
    assert all(pid != os.getpid() for name, pid in (out[("a", None)], out[("c", None)]))
    assert "an earlier run stopped while handling b in its main process" in capsys.readouterr().err
    assert journal.left_behind() is None
    suspects = Supervision(0, suspects=frozenset({"b"}))  # a crash an earlier run recorded
    out = dict(supervised_map(behave, items, suspects, name=first))
    assert out[("b", "segv")].kind == CRASHED


def test_failure_messages_name_the_signal_or_status():
    assert supervised.describe_exit(-11) == "died of SIGSEGV (Segmentation fault)"
    assert supervised.describe_exit(3) == "exited with status 3"
    failure = supervised.timeout_failure("clip.mp4", 120)
    assert failure.kind == TIMED_OUT and failure.problem.startswith(
        "clip.mp4: timed out: no progress for 120 s")


@pytest.mark.slow
def test_stopping_does_not_wait_for_a_stuck_supervisor(monkeypatch):
    """Ctrl-C (here an exception in the caller) returns within 2 x STOP_GRACE even when the
    supervising thread is stuck in a blocking call, and the workers are killed all the same."""
    monkeypatch.setattr(supervised, "STOP_GRACE", 0.5)
    stuck, pids = threading.Event(), []
    watch = supervised._Supervisor._watch

    def watch_then_stick(self):
        watch(self)
        if any(worker.task is not None for worker in self._pool):
            pids.extend(worker.popen.pid for worker in self._pool)
            stuck.wait(60)  # a blocking call that the stop's wake-up cannot end

    monkeypatch.setattr(supervised._Supervisor, "_watch", watch_then_stick)
    pool = WorkerPool(behave, Supervision(1, LIMIT))
    mapped = pool.map([("a", "slow:30")])
    threading.Timer(2.0, _thread.interrupt_main).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        next(mapped)
    assert time.monotonic() - start < 2.0 + 2 * 0.5 + 1.0
    assert pids and all(ended(pid) for pid in pids)  # dead; reaped when the thread goes on
    stuck.set()


def ended(pid: int) -> bool:
    """Whether process `pid` is gone or dead and not yet reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
