"""Per-video work in supervised worker processes, so that no single video can stop or hang a
corpus run: every per-video stage (frame extraction, saliency maps, scoring, labelled-set
evaluation, overlay videos) runs through dagr/runner.py, which hands its videos to
`supervised_map` (or a `WorkerPool`, whose processes serve one map after another).

`supervised_map(function, items, supervision)` yields `(item, outcome)` for every item: what
`function(item)` returned, or a `Failure` when the item took its worker process down:

- CRASHED: the worker died while handling it (SIGSEGV or SIGABRT in a native decoder, the
  kernel's OOM kill, an exit); the message names the signal or the exit status;
- TIMED_OUT: the item made no progress for `supervision.timeout` seconds (a decoder in an endless
  loop); its worker is killed. Progress is each frame decoded, read or written (`progress()`,
  which video_io and images call), so the limit does not grow with a video's length.

Each worker process handles one item at a time; a dead or killed worker is replaced and the
other items go on. A thread of the main process watches the workers and drains their results
while the caller computes, so a result never waits in a pipe and a hung worker is stopped
even while the caller is busy. The workers run in their own process group: a Ctrl-C at the
terminal reaches only the main process, which kills them (SIGKILL: nothing of theirs can print
or abort on the way out) and says so in one line (dagr.cli.run_script). On Linux the kernel
also kills them when the main process dies, however it dies. A worker imports what the work
needs (the main script only when the work refers to it), not the main process's modules.

`supervision.workers` 0 calls `function` in this process. Nothing survives a native crash there; with
a `Journal`, the name of the item in hand is written down before it starts and removed when
it ends, so a run that finds a name left behind (its predecessor died on that item) and any
run given `suspects` (items that crashed or timed out before) handles its items in one worker
process instead.

The worker's side is dagr/worker_side.py. Imports no project module but dagr.failures,
dagr.files and dagr.worker_side.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing import spawn
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

from dagr.failures import CRASHED, TIMED_OUT, Failure, read_failures
from dagr.failures import WORKER_KINDS as KINDS  # the name scoring.py reads
from dagr.files import atomic_path

T = TypeVar("T")
R = TypeVar("R")

VIDEO_TIMEOUT = 120      # seconds without progress (a frame decoded, read or written) = a hang
AHEAD = 2                # results a worker may have ready beyond the caller's (memory bound)
START_TIMEOUT = 300.0    # seconds a worker may take to import and set up before it counts broken
STOP_GRACE = 5.0         # seconds a finished worker gets to exit before it is killed

# the command a worker process runs: the package's parent first on sys.path, so that it
# imports from wherever the main process does (the rest of sys.path comes with the setup)
_BOOT = ("import sys; sys.path.insert(0, {root!r}); from dagr.worker_side import serve; "
         "serve(int(sys.argv[1]), int(sys.argv[2]))")
_ROOT = str(Path(__file__).resolve().parents[1])


# ----------------------------------------------------------------------------- in the main process

class WorkerError(OSError):
    """A worker process could not start (its set-up failed or it died on the way): the stage
    cannot run at all. An OSError, so that the scripts report it in one line (exit status 2)."""


def describe_exit(returncode: int) -> str:
    """What ended a worker process, from Popen's returncode: `died of SIGSEGV (Segmentation
    fault)`, `was killed (SIGKILL: ...)`, `exited with status 1`."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGKILL:
        return ("was killed (SIGKILL; the kernel's out-of-memory killer sends it, so the video "
                "may need more memory than this machine has)")
    return f"died of {name} ({signal.strsignal(number) or 'unknown signal'})"


def crashed_before(failures_csv: str | os.PathLike, id_column: str) -> set[str]:
    """The ids that a failures CSV of an earlier run lists as crashed or timed out: a rerun
    hands them to a worker process even with --workers 0."""
    return {key for key, failure in read_failures(failures_csv, id_column).items()
            if failure.kind in KINDS}


def crash_failure(name: str, returncode: int) -> Failure:
    return Failure(CRASHED, f"{name}: crashed: the worker process handling it "
                   f"{describe_exit(returncode)}; skipped")


def timeout_failure(name: str, limit: float) -> Failure:
    return Failure(TIMED_OUT, f"{name}: timed out: no progress for {limit:g} s (a decoder "
                   "stuck in a loop?); its worker process was killed (--video-timeout sets "
                   "the limit)")


def _preparation(with_main: bool) -> dict:
    """What a worker needs to import as this process does: multiprocessing's preparation data
    for a spawned process (sys.path, working folder, and the main module when the work refers
    to it: importing a script takes seconds, the package's light modules a fraction of one),
    less the authentication key, which multiprocessing refuses to pickle and the workers do
    not use."""
    data = spawn.get_preparation_data("dagr-worker")
    data.pop("authkey", None)
    if not with_main:
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


@dataclass
class _Worker:
    popen: subprocess.Popen
    channel: Connection
    started: float
    ready: bool = False
    task: int | None = None          # index of the item in hand
    deadline: float | None = None    # when the item in hand times out; None: not timed


class _Supervisor(threading.Thread):
    """The thread that starts the workers, hands them the items of the current map, drains
    their messages into `results` and replaces the ones that die or hang, until stopped. It
    never raises: a failure of the machinery itself goes to `results` as ("error", exception),
    and the thread ends."""

    def __init__(self, function: Callable, workers: int, timeout: float,
                 setup: Callable | None, setup_args: tuple):
        super().__init__(name="dagr-supervisor", daemon=True)
        self.count, self.timeout = workers, timeout
        self.results: queue.Queue = queue.Queue()
        self.consumed = 0            # results the caller took (written by the main thread)
        self.window = workers * (1 + AHEAD)
        self.stopping = False
        self.kill = False            # when stopping: kill the workers rather than let them end
        self._work = pickle.dumps((function, setup, setup_args))
        self._setup: list[bytes] | None = None  # what a worker is sent first (at the first map)
        self._pool: list[_Worker] = []
        self._items: Sequence = ()
        self._names: Sequence[str] = ()
        self._pending: deque[int] = deque()
        self._dispatched = 0
        self._wake_read, self._wake_write = os.pipe()
        flags = fcntl.fcntl(self._wake_write, fcntl.F_GETFL)
        fcntl.fcntl(self._wake_write, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    # -- called by the main thread
    def submit(self, items: Sequence, names: Sequence[str]) -> None:
        """Start a map over `items` (the previous one is finished). A pool's maps are of items
        of one kind: whether the workers import the main module is decided at the first."""
        if self._setup is None:
            uses_main = b"__main__" in self._work + pickle.dumps(items[0])
            self._setup = [pickle.dumps(_preparation(uses_main)), self._work]
        self._items, self._names = items, names
        self._dispatched = self.consumed = 0
        self._pending.extend(range(len(items)))
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes it already
            os.write(self._wake_write, b"x")

    def stop(self, kill: bool) -> None:
        """End the thread and the workers. With `kill` (Ctrl-C, an error) this returns within
        about 2 x STOP_GRACE even if the thread is stuck in a blocking call: the workers are
        then killed from here and the thread (a daemon) is left to the process's exit."""
        self.kill, self.stopping = kill, True
        self.wake()
        if self.ident is None:  # a Ctrl-C may come between creating the thread and starting it
            self._close_wake_pipe()
            return
        self.join(STOP_GRACE if kill else None)
        if self.is_alive():
            for worker in list(self._pool):
                self._signal_group(worker, signal.SIGKILL)
            self.join(STOP_GRACE)
        if not self.is_alive():
            self._close_wake_pipe()

    def _close_wake_pipe(self) -> None:
        os.close(self._wake_read)
        os.close(self._wake_write)

    # -- the thread
    def run(self) -> None:
        try:
            while not self.stopping:
                self._staff()
                self._dispatch()
                self._watch()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self.kill = True
            self.results.put(("error", err))
        finally:
            self._retire()

    def _busy(self) -> list[_Worker]:
        return [w for w in self._pool if w.task is not None]

    def _staff(self) -> None:
        """Start workers while there is work for more (a replacement for each one lost);
        between maps they stay."""
        wanted = min(self.count, len(self._pending) + len(self._busy()))
        while len(self._pool) < wanted:
            self._pool.append(self._launch())

    def _launch(self) -> _Worker:
        ours, theirs = Pipe()
        try:
            popen = subprocess.Popen(
                [sys.executable, "-c", _BOOT.format(root=_ROOT), str(theirs.fileno()),
                 str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                process_group=0)  # its own group: the terminal's Ctrl-C is not for it
        finally:
            theirs.close()
        worker = _Worker(popen, ours, time.monotonic())
        with contextlib.suppress(OSError):  # it died at once: _watch finds it
            for part in self._setup:
                ours.send_bytes(part)
        return worker

    def _dispatch(self) -> None:
        for worker in self._pool:
            if not self._pending or self._dispatched - self.consumed >= self.window:
                return
            if worker.ready and worker.task is None:
                index = self._pending.popleft()
                worker.task, worker.deadline = index, time.monotonic() + self.timeout
                self._dispatched += 1
                with contextlib.suppress(OSError):  # it died: _watch finds it, item in hand
                    worker.channel.send_bytes(pickle.dumps(self._items[index],
                                                           pickle.HIGHEST_PROTOCOL))

    def _watch(self) -> None:
        """Wait for messages, deaths, a wake-up or the next deadline, and act on them."""
        ready = wait([w.channel for w in self._pool] + [self._wake_read], self._wait_time())
        if self._wake_read in ready:
            os.read(self._wake_read, 65536)
        for worker in list(self._pool):
            if worker.channel in ready:
                self._read(worker)
        now = time.monotonic()
        for worker in list(self._pool):
            if worker.task is not None and worker.deadline is not None and now >= worker.deadline:
                self._finish(worker, timeout_failure(self._names[worker.task], self.timeout))
                self._drop(worker)
            elif not worker.ready and now - worker.started > START_TIMEOUT:
                raise WorkerError(f"a worker process did not start within {START_TIMEOUT:g} s")

    def _wait_time(self) -> float | None:
        deadlines = [w.deadline for w in self._pool if w.task is not None and w.deadline]
        deadlines += [w.started + START_TIMEOUT for w in self._pool if not w.ready]
        return max(min(deadlines) - time.monotonic(), 0.0) if deadlines else None

    def _read(self, worker: _Worker) -> None:
        """Every message waiting from `worker`; its end when the pipe is closed."""
        while True:
            try:
                if not worker.channel.poll():
                    return
                message = worker.channel.recv_bytes()
            except (EOFError, OSError):
                self._died(worker)
                return
            self._handle(worker, pickle.loads(message))

    def _handle(self, worker: _Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
        elif kind == "broken":
            raise WorkerError(f"a worker process could not set up: {message[1]}")
        elif kind == "beat":
            worker.deadline = time.monotonic() + self.timeout
        elif kind == "hold":
            worker.deadline = None
        elif kind == "done":
            self._finish(worker, message[1])
        elif kind == "raised":
            error, trace = message[1], message[2]
            error.add_note(f"(raised in a worker process)\n{trace}")
            raise error

    def _died(self, worker: _Worker) -> None:
        try:
            returncode = worker.popen.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:  # its pipe closed but it lives on: end it
            returncode = self._kill(worker)
        self._pool.remove(worker)
        worker.channel.close()
        if not worker.ready:
            raise WorkerError(f"a worker process {describe_exit(returncode)} while starting")
        if worker.task is not None:
            self._finish(worker, crash_failure(self._names[worker.task], returncode))

    def _finish(self, worker: _Worker, outcome: Any) -> None:
        self.results.put((worker.task, outcome))
        worker.task, worker.deadline = None, None

    def _drop(self, worker: _Worker) -> None:
        self._kill(worker)
        self._pool.remove(worker)
        worker.channel.close()

    @staticmethod
    def _signal_group(worker: _Worker, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.popen.pid, number)  # its group: anything it started too

    @classmethod
    def _kill(cls, worker: _Worker) -> int:
        cls._signal_group(worker, signal.SIGKILL)
        return worker.popen.wait()

    def _retire(self) -> None:
        """End every worker: killed when asked (what they hold is thrown away), else their
        pipes closed, which ends them, and killed only if they linger."""
        for worker in self._pool:
            if self.kill:
                self._kill(worker)
            worker.channel.close()
        for worker in self._pool:
            try:
                worker.popen.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._kill(worker)
        self._pool.clear()


# ----------------------------------------------------------------------------- journal

class Journal:
    """The item in hand in this process, written down (atomically, as JSON: any name survives)
    before it starts and removed when it ends: a run that dies of a native crash leaves the
    name behind, so that the next run knows which item killed it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def left_behind(self) -> str | None:
        try:
            return json.loads(self.path.read_text())["item"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def enter(self, item: str) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({"item": item, "pid": os.getpid()}))

    def leave(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Supervision:
    """How a stage runs its per-video work: `workers` processes (0: this process), the limit
    in seconds without progress, the journal of a run in this process, and the names of
    items known to have crashed or timed out before (handled in a worker process even when
    `workers` is 0)."""
    workers: int
    timeout: float = VIDEO_TIMEOUT
    journal: Journal | None = None
    suspects: frozenset[str] = frozenset()


class WorkerPool:
    """`function` over lists of items, by supervised worker processes that serve one map after
    another (a context manager; `supervised_map` for a single map). Each worker runs
    `setup(*setup_args)` once first. `function`, `setup` and the items must pickle
    (module-level functions; a script's own functions work, as with multiprocessing's
    spawn)."""

    def __init__(self, function: Callable[[T], R], supervision: Supervision,
                 setup: Callable[..., None] | None = None, setup_args: tuple = ()):
        self.function, self.supervision = function, supervision
        self.setup, self.setup_args = setup, setup_args
        self._supervisor: _Supervisor | None = None
        self._set_up_here = False

    def map(self, items: Sequence[T], name: Callable[[T], str] = str, ordered: bool = False
            ) -> Iterator[tuple[T, R | Failure]]:
        """(item, function(item) or a Failure of kind CRASHED or TIMED_OUT) for each of
        `items`: as they are ready, or in their order when `ordered`. `name(item)` names an
        item in messages and in the journal. An exception that `function` raises is raised
        here (with the worker's traceback as a note), and the pool is closed. Stopping early
        (closing the iterator, an exception, Ctrl-C) kills the workers."""
        items = list(items)
        names = [name(item) for item in items]
        if not self._in_workers(names):
            yield from self._here(items, names)
            return
        if not items:
            return
        finished = False
        supervisor = self._started()
        supervisor.submit(items, names)
        try:
            yield from _collect(supervisor, items, ordered)
            finished = True
        finally:
            if not finished:
                self.close(kill=True)
        if self.supervision.journal is not None:
            self.supervision.journal.leave()  # what an earlier run left there is handled now

    def _in_workers(self, names: list[str]) -> bool:
        """Whether items go to worker processes: when asked, and when this process must not
        handle them (the journal names one that an earlier run died on, or a suspect)."""
        if self.supervision.workers > 0 or self._supervisor is not None:
            return True
        journal = self.supervision.journal
        left = journal.left_behind() if journal is not None else None
        if left in names:
            tqdm.write(f"note: an earlier run stopped while handling {left} in its main "
                       "process (a native crash?); this run handles each video in a worker "
                       "process", file=sys.stderr)  # a progress bar may be on the screen
        return left in names or bool(self.supervision.suspects & set(names))

    def _here(self, items: list[T], names: list[str]) -> Iterator[tuple[T, R]]:
        """The items in this process, each one's name in the journal while it is in hand."""
        if self.setup is not None and not self._set_up_here:
            self.setup(*self.setup_args)
            self._set_up_here = True
        journal = self.supervision.journal
        for item, item_name in zip(items, names):
            if journal is not None:
                journal.enter(item_name)
            try:
                result = self.function(item)
            finally:  # whatever Python raised, this process lives: only a native death leaves it
                if journal is not None:
                    journal.leave()
            yield item, result

    def _started(self) -> _Supervisor:
        if self._supervisor is None:
            self._supervisor = _Supervisor(self.function, max(self.supervision.workers, 1),
                                           self.supervision.timeout, self.setup, self.setup_args)
            self._supervisor.start()
        return self._supervisor

    def close(self, kill: bool = False) -> None:
        """End the workers: let them exit, or kill them (`kill`) when work is left."""
        if self._supervisor is not None:
            self._supervisor.stop(kill)
            self._supervisor = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, kind: type | None, *_: Any) -> None:
        self.close(kill=kind is not None)


def supervised_map(function: Callable[[T], R], items: Sequence[T], supervision: Supervision,
                   name: Callable[[T], str] = str, ordered: bool = False,
                   setup: Callable[..., None] | None = None, setup_args: tuple = ()
                   ) -> Iterator[tuple[T, R | Failure]]:
    """One `WorkerPool(function, supervision, setup, setup_args).map(items, name, ordered)`,
    its workers ended when it ends."""
    with WorkerPool(function, supervision, setup, setup_args) as pool:
        yield from pool.map(items, name, ordered)


def _collect(supervisor: _Supervisor, items: list[T], ordered: bool
             ) -> Iterator[tuple[T, Any]]:
    """The supervisor's results of one map, as they come or in order; each one counts as
    taken (so that the supervisor hands out more) when the caller asks for the next."""
    done: dict[int, Any] = {}
    following = 0  # ordered: the index to yield next
    for _ in range(len(items)):
        index, outcome = _next_result(supervisor)
        if not ordered:
            yield items[index], outcome
            _taken(supervisor)
            continue
        done[index] = outcome
        while following in done:
            yield items[following], done.pop(following)
            following += 1
            _taken(supervisor)


def _taken(supervisor: _Supervisor) -> None:
    supervisor.consumed += 1
    supervisor.wake()


def _next_result(supervisor: _Supervisor) -> tuple[Any, Any]:
    """The supervisor's next (index, outcome); raises what it raised."""
    while True:
        try:
            index, outcome = supervisor.results.get(timeout=1.0)  # a timeout: Ctrl-C gets in
        except queue.Empty:
            if not supervisor.is_alive():
                raise WorkerError("the worker processes' supervisor stopped unexpectedly") from None
            continue
        if index == "error":
            raise outcome
        return index, outcome


# ----------------------------------------------------------------------------- command line

def add_timeout_argument(parser: Any) -> str:
    """The --video-timeout option; returns its dest."""
    return parser.add_argument(
        "--video-timeout", type=positive_seconds, default=VIDEO_TIMEOUT, metavar="SECONDS",
        help="a video whose worker process makes no progress (no frame decoded, read or "
             "written) for this long is stopped and reported as timed-out; the limit counts "
             "from the last frame, so long videos need no more").dest


def positive_seconds(text: str) -> float:
    """argparse type of a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value
