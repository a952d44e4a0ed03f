"""Why an input failed: the failure kinds, listed once (`KINDS`; docs/robustness.md's table),
one `Failure` per file (a kind and one line naming the file), the failures CSV every
per-video stage writes (and reads back on a rerun), and the first line of an exception's
message.

Imports no project module but dagr.files.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from dagr.files import NAMES_ENCODING, atomic_path

# ----------------------------------------------------------------------------- the kinds, listed once
MISSING = "missing"                      # no such file
EMPTY = "empty-file"                     # zero bytes
NOT_MEDIA = "not-media"                  # FFmpeg recognises no container in it
NO_VIDEO = "no-video-stream"             # a media file without video (audio only, say)
UNSUPPORTED_CODEC = "unsupported-codec"  # a video stream no available decoder reads
DAMAGED = "damaged"                      # cut short or damaged: too few frames decode
CRASHED = "crashed"                      # the worker process handling it died
TIMED_OUT = "timed-out"                  # its worker made no progress for --video-timeout s
DUPLICATE_ID = "duplicate-id"            # extract_frame.py: two inputs with one video id
WRITE_FAILED = "write-failed"            # its frames, maps or overlays could not be written
UNREADABLE_FRAMES = "unreadable-frames"  # its stored frames or maps cannot be read
ERROR = "error"                          # any other error (the message says which)
KINDS = (MISSING, EMPTY, NOT_MEDIA, NO_VIDEO, UNSUPPORTED_CODEC, DAMAGED, CRASHED, TIMED_OUT,
         DUPLICATE_ID, WRITE_FAILED, UNREADABLE_FRAMES, ERROR)  # docs/robustness.md's table
WORKER_KINDS = (CRASHED, TIMED_OUT)  # the video took its worker down: a rerun decodes it in one


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
    as kind ERROR. When nothing failed, write no file and remove one that an earlier run
    left."""
    path = Path(path)
    if not failures:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="", **NAMES_ENCODING) as handle:
        writer = csv.writer(handle)
        writer.writerow([id_column, "kind", "problem"])
        for key, failure in sorted(failures.items()):
            failure = failure if isinstance(failure, Failure) else Failure(ERROR, str(failure))
            writer.writerow([key, failure.kind, failure.problem])


def read_failures(path: str | os.PathLike, id_column: str) -> dict[str, Failure]:
    """{id: Failure} of a failures CSV that `write_failures` wrote; {} when there is none or it
    is not one (it is only a record of an earlier run)."""
    try:
        with open(path, newline="", **NAMES_ENCODING) as handle:
            return {row[id_column]: Failure(row["kind"], row["problem"])
                    for row in csv.DictReader(handle)}
    except (OSError, KeyError, csv.Error):
        return {}


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (torch's run over many lines)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
