"""The worker's side of dagr/supervised.py: what runs inside a supervised worker process. It
serves one item at a time over its pipe, and `progress()` tells the main process that the item
in hand is moving. video_io and images call it on every frame, and outside a worker it does
nothing. This module is small and imports no torch, so a worker starts in under a second,
also after a crash.

Imports no project module.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import time
import traceback
from multiprocessing import spawn
from multiprocessing.connection import Connection
from typing import Callable, Iterator

BEAT_EVERY = 1.0         # a worker reports progress at most this often
PR_SET_PDEATHSIG = 1     # linux/prctl.h

_PIPE_GONE = (EOFError, BrokenPipeError, ConnectionResetError)  # the other end closed
_channel: Connection | None = None  # the pipe to the main process, in a worker process only
_last_beat = 0.0


def progress() -> None:
    """Say that the item in hand is moving (a frame decoded, read or written): its time limit
    counts from the latest call. Does nothing outside a worker process; sends at most one
    message per BEAT_EVERY seconds, so calling it per frame costs nothing."""
    global _last_beat
    if _channel is None:
        return
    now = time.monotonic()
    if now - _last_beat >= BEAT_EVERY:
        _last_beat = now
        _send(("beat",))


@contextlib.contextmanager
def unlimited() -> Iterator[None]:
    """A block whose time does not count against the limit: trusted work that may be slow
    without being stuck (a network's forward pass on a CPU). A crash inside still counts."""
    if _channel is None:
        yield
        return
    _send(("hold",))
    try:
        yield
    finally:
        _beat_now()
        _send(("beat",))


def _send(message: tuple) -> None:
    _channel.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def serve(fd: int, parent: int) -> None:
    """A worker process's life (`_BOOT` calls it): set up like a `multiprocessing` spawned
    process (the main's sys.path, working folder and main module), run the set-up function,
    then handle one item per message until the main process closes the pipe. A closed pipe
    at any point ends it quietly: the main process is done with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _die_with(parent)
    channel = Connection(fd)
    with contextlib.suppress(*_PIPE_GONE):
        function = _set_up(channel)
        if function is not None:
            _work(channel, function)


def _set_up(channel: Connection) -> Callable | None:
    """The function to run on items, once the main module is imported and the set-up
    function has run; None when that failed (the main process is told why)."""
    try:
        spawn.prepare(pickle.loads(channel.recv_bytes()))
        function, setup, setup_args = pickle.loads(channel.recv_bytes())
        if setup is not None:
            setup(*setup_args)
    except Exception as err:  # noqa: BLE001 - said to the main process, which stops
        if isinstance(err, _PIPE_GONE):
            raise
        channel.send_bytes(pickle.dumps(("broken", f"{type(err).__name__}: {err}")))
        return None
    return function


def _work(channel: Connection, function: Callable) -> None:
    global _channel
    _channel = channel
    _send(("ready",))
    while True:
        item = pickle.loads(channel.recv_bytes())
        _beat_now()
        try:
            outcome = ("done", function(item))
        except Exception as err:  # noqa: BLE001 - raised again in the main process
            outcome = ("raised", err, traceback.format_exc())
        try:
            _send(outcome)
        except (pickle.PicklingError, TypeError, AttributeError) as err:  # pickle refuses it
            trace = outcome[2] if outcome[0] == "raised" else ""
            _send(("raised", RuntimeError(f"a worker's result cannot be sent back ({err}): "
                                          f"{outcome[1]!r}"), trace))


def _beat_now() -> None:
    global _last_beat
    _last_beat = time.monotonic()


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when the thread that started it ends (the main process
    dies, however it dies, or the supervisor is done): a worker in its own process group,
    stuck in native code, would otherwise outlive it. Elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            return
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent ended before the request was in place
        os._exit(0)
