"""The one runner of every per-video stage (frame extraction, saliency maps, overlay videos,
labelled-set evaluation, scoring): a stage says what its items are, the work per item and where
its output goes (a `Stage`); `StageRun` does the rest, the same way for all of them:

- this process's share of the items (`--shard`, torchrun), less those already finished: a
  folder output's items whose outputs are there (`Stage.done`), a file output's rows kept in
  its partial file with `--resume` (those that failed too, unless `--retry-failed`);
- the work in supervised worker processes (dagr/supervised.py: a crash or hang fails one
  video), the journal of a run in this process, and the items that crashed or hung before
  (listed in the failures CSV, or kept as failed) handed to a worker process;
- a file output's rows appended to its partial file as they come (dagr/sharding.py);
- the progress bar; Ctrl-C as `Interrupted`, one line saying what was kept (exit 130 by
  dagr.cli.run_script), the workers killed and nothing half-written left;
- the failures CSV (dagr/outputs.py's one naming rule), written with the stage's other CSV
  files, merged across shards; the end summary and the exit status.

A stage hands `StageRun.run` a `produce(todo, workers)` function: it gets the items to do and
`Workers` (`workers.map(...)`, or `workers.supervision` for a pool of its own, closed with
the generator), and yields one `Outcome` per item as each is finished in this process
(written, scored, predicted).

Imports no script; dagr.cli, dagr.failures, dagr.files, dagr.outputs, dagr.sharding,
dagr.supervised and dagr.workers only.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from dagr.cli import Interrupted
from dagr.failures import Failure, write_failures
from dagr.files import remove_leftovers
from dagr.outputs import Output
from dagr.sharding import (CsvOutput, PartialRows, Shard, exit_status, journal,
                           partial_path, write_outputs)
from dagr.supervised import KINDS, VIDEO_TIMEOUT, Supervision, crashed_before, supervised_map
from dagr.workers import default_workers


@dataclass(frozen=True)
class Stage:
    """What a per-video stage is to the runner. `label`: the progress bar's; `verb`: what
    the stage did to a video (`sampled`, `scored`), in "N of M videos sampled into OUT";
    `key(item)`: its id in the failures CSV (column `key_column`); `name(item)`: how messages
    and the journal name it (its file); `check(item)`: a Failure known before any work (a
    repeated id), or None; `done(item)`: whether a folder output holds its finished output;
    `leftovers(item)`: the output path an atomic write of the item may have left half-written
    when stopped. A file output's rows (`fields`, among them `key_column`, `kind` and
    `problem`) are kept in its partial file."""
    label: str
    verb: str
    out: Output
    key: Callable[[Any], str]
    name: Callable[[Any], str]
    key_column: str = "video_id"
    check: Callable[[Any], Failure | None] | None = None
    done: Callable[[Any], bool] | None = None
    leftovers: Callable[[Any], Path] | None = None
    fields: Sequence[str] = ()


@dataclass(frozen=True)
class RunOptions:
    """The command line's part in a run: worker processes (`workers`; None: the cores, at most
    one per video, none for one video; at most `most_workers`), `timeout` (seconds without
    progress = a hang), `shard`, `resume` and `retry_failed` (file outputs), `progress`."""
    workers: int | None = None
    timeout: float = VIDEO_TIMEOUT
    shard: Shard = Shard()
    resume: bool = False
    retry_failed: bool = False
    progress: bool = True
    most_workers: int | None = None


@dataclass(frozen=True)
class Outcome:
    """One item finished: its key, its Failure (None: done), a file output's row, and a note
    worth saying about it (printed above the progress bar)."""
    key: str
    failure: Failure | None = None
    row: dict[str, str] | None = None
    note: str = ""


class Workers:
    """The supervised worker processes of one `StageRun.run`: what `produce` starts work with.
    Every map it starts is stopped (its workers killed) when the run is stopped."""

    def __init__(self, supervision: Supervision):
        self.supervision = supervision
        self._maps: list[Iterator] = []

    def map(self, function: Callable, items: Sequence, name: Callable[[Any], str] = str,
            ordered: bool = False, setup: Callable[..., None] | None = None,
            setup_args: tuple = ()) -> Iterator[tuple[Any, Any]]:
        """dagr.supervised.supervised_map under this run's supervision."""
        mapped = supervised_map(function, items, self.supervision, name, ordered, setup,
                                setup_args)
        self._maps.append(mapped)
        return mapped

    def stop(self) -> None:
        for mapped in self._maps:
            mapped.close()


Produce = Callable[[list, Workers], Iterator[Outcome]]


@dataclass
class StageRun:
    """One run of `stage` (several `run` calls may add to it, one per labelled set): the
    share's failures by key, how many items were skipped as finished and done now, and, for a
    file output, every row by key."""
    stage: Stage
    options: RunOptions = RunOptions()
    failures: dict[str, Failure] = field(default_factory=dict)
    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    share: int = 0
    skipped: int = 0
    finished: int = 0
    merged: bool = False

    def __post_init__(self) -> None:
        self.stage.out.create()
        self._partial = (None if self.stage.out.folder else
                         PartialRows(partial_path(self.stage.out.path, self.options.shard),
                                     self.stage.fields))
        self._retried: list[dict[str, str]] = []  # kept rows of failures tried again

    # -- the work
    def run(self, items: Sequence, produce: Produce,
            name: Callable[[Any], str] | None = None) -> None:
        """`produce` on the share of `items` that is not finished, each Outcome recorded (a
        file output: one `run` per StageRun, as its partial file is opened once). `name`:
        how `produce`'s worker maps name these items, where that is not the stage's `name`
        (a labelled set's videos by their frames folder)."""
        todo = self._todo(self.options.shard.take(list(items)))
        workers = Workers(self._supervision(todo, name or self.stage.name))
        outcomes = produce(todo, workers)
        try:
            with tqdm(total=len(todo), unit="video", desc=self.stage.label,
                      disable=not self.options.progress) as bar:
                for outcome in outcomes:
                    self._record(outcome)
                    _advance(bar)
        except KeyboardInterrupt:
            raise Interrupted(self._kept(len(todo))) from None
        finally:  # the workers stopped (killed, when work is left), what they were writing removed
            outcomes.close()
            workers.stop()
            if self._partial is not None:
                self._partial.close()
            if self.stage.leftovers is not None:
                remove_leftovers(map(self.stage.leftovers, todo))

    def _todo(self, share: list) -> list:
        self.share += len(share)
        if self._partial is not None:
            self._resume()
        todo = []
        for item in share:
            failure = self.stage.check(item) if self.stage.check is not None else None
            if failure is not None:
                self.failures[self.stage.key(item)] = failure
            elif self.stage.key(item) in self.rows or (self.stage.done is not None
                                                       and self.stage.done(item)):
                self.skipped += 1
            else:
                todo.append(item)
        return todo

    def _resume(self) -> None:
        """Open a file output's partial file: with --resume, its rows of the earlier run are
        kept as done, less the failures to try again (--retry-failed)."""
        retry = self.options.retry_failed
        kept, self._retried = self._partial.start(self.options.resume,
                                                  redo=lambda row: retry and bool(row["problem"]))
        for row in kept:
            self._record(Outcome(row[self.stage.key_column], row_failure(row), row), again=True)
        failed = sum(bool(row["problem"]) for row in kept)
        if failed:
            print(f"note: {failed} video(s) that failed in the earlier run are not tried "
                  "again (--retry-failed tries them)", file=sys.stderr)

    def _supervision(self, todo: list, name: Callable[[Any], str]) -> Supervision:
        """Workers as asked, the journal beside the output, and as suspects (by `name`, as the
        worker maps name them) the items that crashed or hung before: listed so in the
        failures CSV, or in the rows tried again."""
        crashed = crashed_before(self.stage.out.failures, self.stage.key_column)
        crashed |= {row[self.stage.key_column] for row in self._retried if row["kind"] in KINDS}
        count = self.options.workers
        if count is None:
            count = min(default_workers(len(todo)), self.options.most_workers or len(todo))
        return Supervision(count, self.options.timeout,
                           journal(self.stage.out.path, self.options.shard),
                           frozenset(name(i) for i in todo if self.stage.key(i) in crashed))

    def _record(self, outcome: Outcome, again: bool = False) -> None:
        if outcome.note:
            tqdm.write(f"note: {outcome.note}", file=sys.stderr)
        if outcome.failure is not None:
            self.failures[outcome.key] = outcome.failure
        if outcome.row is not None:
            self.rows[outcome.key] = outcome.row
            if not again:
                self._partial.append(outcome.row)
        if not again:
            self.finished += 1

    def _kept(self, todo: int) -> str:
        """The Interrupted line: what is kept, and how to go on."""
        if self._partial is not None:
            return (f"{len(self.rows)} of {self.share} videos {self.stage.verb}, kept in "
                    f"{self._partial.path}; run again with --resume to continue")
        if self.stage.done is None:
            return (f"{self.finished} of {todo} videos {self.stage.verb} before the stop; "
                    "nothing is kept until a run ends: run the same command again")
        return (f"{self.finished} of {todo} videos {self.stage.verb} into {self.stage.out.path} "
                "and kept; run the same command again to do the rest")

    # -- the end
    def write(self, outputs: Sequence[CsvOutput] = (),
              finish: Callable[[], None] | None = None) -> bool:
        """The stage's CSV files `outputs` and the failures CSV, merged across shards (the
        failures CSV last), then `finish()` once they are final. Returns (and keeps as
        `merged`) whether the final files are written (False: other shards still work). A
        file output's partial file goes once all is written; if writing fails, OSError says
        that the finished work is kept in it."""
        listing = CsvOutput(self.stage.out.failures, lambda path: write_failures(
            path, self.failures, self.stage.key_column), self.stage.key_column)
        try:
            self.merged = write_outputs([*outputs, listing], self.options.shard)
            if self.merged and finish is not None:
                finish()
        except OSError as err:
            if self._partial is None:
                raise
            raise OSError(f"{self.stage.out.path}: could not be written ({err}); the results "
                          f"of {len(self.rows)} videos are kept in {self._partial.path}: run "
                          "the same command with --resume to write it") from err
        if self._partial is not None:
            self._partial.remove()
        return self.merged

    def summary(self, left_out: Sequence[str] = ()) -> int:
        """Print what was done and what failed (each failure's line, and `left_out`: label
        rows left out); returns the exit status (dagr.sharding.exit_status), after `write`."""
        shard = self.options.shard
        done = self.share - len(self.failures)
        skipped = f" ({self.skipped} video(s) already done, skipped)" if self.skipped else ""
        where = "" if shard.single else f" (shard {shard.index} of {shard.count})"
        print(f"{done} of {self.share} videos {self.stage.verb} into {self.stage.out.path}"
              f"{skipped}{where}")
        if self.failures:
            print(f"{len(self.failures)} failed (listed in {self.stage.out.failures}):",
                  file=sys.stderr)
            for _, failure in sorted(self.failures.items()):
                print(f"  {failure}", file=sys.stderr)
        for problem in left_out:
            print(f"left out: {problem}", file=sys.stderr)
        return exit_status(shard, bool(self.failures or left_out), self.merged,
                           self.stage.out.failures, bool(left_out))


def _advance(bar: tqdm) -> None:
    """One item more on `bar`. The last one is counted without a display: closing the bar
    prints its final line, and a display now would print that line twice (in a log, where
    each refresh is a line of its own)."""
    if bar.n + 1 >= bar.total:
        bar.n += 1
    else:
        bar.update()


def row_failure(row: dict[str, str]) -> Failure | None:
    """The Failure of a file output's row (its `kind` and `problem`), None when it succeeded."""
    return Failure(row["kind"], row["problem"]) if row["problem"] else None
