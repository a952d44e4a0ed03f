"""Corpus-scale runs of the per-video stages (extract_frame.py, inference_sal.py,
evaluate_vqa.py): which videos a process handles, how the CSV files of several processes become
the files of one, and the partial file that lets scoring resume after a crash.

A job is split into N shards: `torchrun --nnodes A --nproc_per_node B` makes N = A * B (shard =
the process's RANK), `--shard I/N` lets a scheduler start them (a SLURM array:
`--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`), and both together split each of the
scheduler's shards among torchrun's processes. Shard I takes items I, I + N, I + 2N, ... of the
stage's sorted list. The processes never talk to each other: they coordinate through files (a
shared file system is all that several machines need):

- per-video outputs (frame folders, maps) are written atomically by whichever shard has the video;
- a CSV output `F` is written by shard I as the part `F.shard-I-of-N.csv` (atomically), then the
  shard leaves a done marker; the shard that finds every marker there writes `F` (atomically,
  rows in the order one process writes them) and removes the parts and markers. If that shard
  dies first, running any shard's command again finishes the merge.

Imports no project module but dagr.files and dagr.supervised.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch

from dagr.files import NAMES_ENCODING, atomic_path
from dagr.supervised import Journal

T = TypeVar("T")

ROW_END = "\r\n"  # what csv writes after each row
FSYNC_EVERY = 16  # rows appended to a partial file between two fsyncs (each row is flushed)


# ----------------------------------------------------------------------------- which share

@dataclass(frozen=True)
class Shard:
    """This process's share of a job: shard `index` (0-based) of `count`."""
    index: int = 0
    count: int = 1

    @property
    def single(self) -> bool:
        return self.count == 1

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def take(self, items: Sequence[T]) -> list[T]:
        """Items index, index + count, ... of `items` (give them sorted: every shard must see
        the same list)."""
        return list(items[self.index::self.count])


def parse_shard(text: str) -> Shard:
    """`I/N` (0 <= I < N) -> Shard; argparse type of --shard."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be in 0..N-1")
    return Shard(index, count)


def add_shard_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> str:
    """The --shard option; returns its dest."""
    return parser.add_argument(
        "--shard", type=parse_shard, default=None, metavar="I/N",
        help="handle only shard I (0-based) of N of the videos, e.g. "
             "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; the last shard to finish writes the "
             "CSV files, if any (default: all videos, or this process's share under torchrun; "
             "docs/distributed.md)").dest


def current_shard(requested: Shard | None = None) -> Shard:
    """The shard of this process: `requested` (--shard), split further among the processes of
    a torchrun job (RANK of WORLD_SIZE) when there is one."""
    requested = requested or Shard()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Shard(requested.index * world + rank, requested.count * world)


def shard_device(device: torch.device) -> torch.device:
    """One GPU per process on a machine: `cuda` becomes cuda:LOCAL_RANK under torchrun (GPUs
    shared in turn when the machine has fewer GPUs than processes; an explicit cuda:N stays),
    anything else is kept."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


# ----------------------------------------------------------------------------- CSV parts and merge

def part_path(final: str | os.PathLike, shard: Shard) -> Path:
    """Where `shard` writes its rows of the CSV file `final`: `scores.shard-0-of-4.csv`."""
    final = Path(final)
    return final.with_name(f"{final.stem}.{shard.tag}{final.suffix}")


def _marker(anchor: Path, shard: Shard) -> Path:
    return anchor.with_name(f"{anchor.stem}.{shard.tag}.done")


@dataclass(frozen=True)
class CsvOutput:
    """A CSV file a stage writes: `write(path)` writes this process's rows to `path` (or no
    file, when it has none and the stage writes none then); rows are merged in the order of
    `order` (ids in `key`), or sorted by `key` when `order` is None."""
    path: Path
    write: Callable[[Path], None]
    key: str
    order: Sequence[str] | None = None


def write_outputs(outputs: Sequence[CsvOutput], shard: Shard) -> bool:
    """Write a stage's CSV files: directly for a single process; as parts, a done marker, and
    the merge if every shard is done, for a shard. Returns whether the final files were
    written (False: other shards still have work)."""
    if shard.single:
        for output in outputs:
            output.write(output.path)
        return True
    written = []
    for output in outputs:
        part = part_path(output.path, shard)
        part.unlink(missing_ok=True)
        output.write(part)
        if part.is_file():
            written.append(part.name)
    with atomic_path(_marker(outputs[0].path, shard)) as tmp:
        tmp.write_text(json.dumps({"parts": written}))
    return merge_if_complete(outputs, shard.count)


def merge_if_complete(outputs: Sequence[CsvOutput], count: int) -> bool:
    """When all `count` shards have left their marker, write each output from its parts and
    remove parts and markers. Two shards that finish together may both merge: they write the
    same files, and one that finds its input gone leaves the work to the other."""
    markers = [_marker(outputs[0].path, Shard(i, count)) for i in range(count)]
    try:
        parts = set().union(*(json.loads(m.read_text())["parts"] for m in markers))
        for output in outputs:
            shards = [part_path(output.path, Shard(i, count)) for i in range(count)]
            merge_csv([p for p in shards if p.name in parts], output.path, output.key,
                      output.order)
    except FileNotFoundError:
        return False
    for path in markers + [part_path(o.path, Shard(i, count)) for o in outputs
                           for i in range(count)]:
        path.unlink(missing_ok=True)
    return True


def merge_csv(parts: Sequence[Path], out: Path, key: str,
              order: Sequence[str] | None = None) -> None:
    """Write the rows of the CSV files `parts` to `out` atomically, in the order of `order`
    (values of the column `key`; others after them, sorted) or sorted by `key`. Generic over
    columns (their union, in order of appearance); the quoting and line ends are those of the
    parts, so the file is byte for byte the one a single process writes. No part: no `out`."""
    if not parts:
        Path(out).unlink(missing_ok=True)
        return
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for part in parts:
        with open(part, newline="", **NAMES_ENCODING) as handle:
            reader = csv.DictReader(handle)
            fields += [f for f in reader.fieldnames or [] if f not in fields]
            rows += list(reader)
    with open(parts[0], newline="", **NAMES_ENCODING) as handle:
        ending = "\r\n" if handle.readline().endswith("\r\n") else "\n"
    position = {value: i for i, value in enumerate(order or [])}
    rows.sort(key=lambda row: (position.get(row[key], len(position)), row[key]))
    with atomic_path(out) as tmp, open(tmp, "w", newline="", **NAMES_ENCODING) as handle:
        writer = csv.DictWriter(handle, fields, lineterminator=ending)
        writer.writeheader()
        writer.writerows(rows)


def exit_status(shard: Shard, failed_here: bool, merged: bool = False,
                failures: Path | None = None, left_out: bool = False) -> int:
    """1 when videos failed or label rows were left out (`left_out`: the same in every rank,
    which all read the labels), else 0. Under torchrun a rank that exits non-zero makes
    torchrun stop the other ranks at once, so there a rank says 1 only once the job's files
    are `merged`, from the merged failures list `failures` when the stage has one; a rank
    that has not merged says 0 (its failures are printed all the same)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return int(failed_here)
    if not merged:
        return 0
    return int(left_out or (failures.is_file() if failures is not None else failed_here))


# ----------------------------------------------------------------------------- partial results

def journal(anchor: str | os.PathLike, shard: Shard) -> Journal:
    """The journal of the video in hand of a run in one process (dagr.supervised.Journal)
    whose output is `anchor`: a hidden file beside it, `.scores.csv.in-flight`, one per shard
    (`.frames.shard-0-of-4.in-flight`)."""
    anchor = Path(anchor)
    tag = "" if shard.single else f".{shard.tag}"
    return Journal(anchor.with_name(f".{anchor.name}{tag}.in-flight"))


def partial_path(final: str | os.PathLike, shard: Shard) -> Path:
    """Where a shard keeps its rows while it works: `scores.csv.partial` for one process,
    `scores.shard-0-of-4.csv.partial` for a shard."""
    final = Path(final) if shard.single else part_path(final, shard)
    return final.with_name(final.name + ".partial")


class PartialRows:
    """Rows of one process written as they come to a CSV file (each row flushed, an fsync every
    FSYNC_EVERY rows), so that a crash or Ctrl-C loses at most the row being written.

    `start(resume, redo)` opens it: with `resume`, the complete rows already there are kept (a
    line torn by a crash is dropped) and returned, less those for which `redo(row)` is true,
    which are returned apart and dropped from the file; without, the file starts empty."""

    def __init__(self, path: str | os.PathLike, fields: Sequence[str]):
        self.path, self.fields = Path(path), list(fields)
        self._handle = None
        self._unsynced = 0

    def start(self, resume: bool, redo: Callable[[dict[str, str]], bool] = lambda row: False
              ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """(rows kept, rows to do again)."""
        kept = self._complete_rows()
        if kept and not resume:
            print(f"note: {self.path}: {len(kept)} result(s) of an earlier run dropped, starting "
                  "again (--resume keeps them)", file=sys.stderr)
            kept = []
        again = [row for row in kept if redo(row)]
        kept = [row for row in kept if not redo(row)]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", **NAMES_ENCODING) as handle:
            writer = csv.DictWriter(handle, self.fields)
            writer.writeheader()
            writer.writerows(kept)
        self._handle = open(self.path, "a", newline="", **NAMES_ENCODING)
        self._writer = csv.DictWriter(self._handle, self.fields)
        return kept, again

    def _complete_rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", **NAMES_ENCODING) as handle:
            text = handle.read()
        # rows end in csv's \r\n (a file name may hold a plain \n): cut the row a crash tore
        text = text[:text.rfind(ROW_END) + len(ROW_END)] if text.rfind(ROW_END) >= 0 else ""
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        return [row for row in rows if None not in row.values() and None not in row]

    def append(self, row: dict[str, str]) -> None:
        self._writer.writerow(row)
        self._handle.flush()
        self._unsynced += 1
        if self._unsynced >= FSYNC_EVERY:
            os.fsync(self._handle.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

