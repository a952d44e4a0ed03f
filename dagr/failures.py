"""Why an input failed: one `Failure` per file (a short kind and one line naming the file),
the failures CSV every per-video stage writes (and reads back on a rerun), and the first line
of an exception's message.

Imports no project module but dagr.files.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from dagr.files import NAMES_ENCODING, atomic_path


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
    with atomic_path(path) as tmp, open(tmp, "w", newline="", **NAMES_ENCODING) as handle:
        writer = csv.writer(handle)
        writer.writerow([id_column, "kind", "problem"])
        for key, failure in sorted(failures.items()):
            failure = failure if isinstance(failure, Failure) else Failure("error", str(failure))
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
