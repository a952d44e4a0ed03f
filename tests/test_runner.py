"""dagr/runner.py on its own, with work done in this process: finished items skipped, failures
known before any work, the failures CSV under the one naming rule, the summary and exit
status, Ctrl-C as one Interrupted line, --resume of a file output, and a progress bar whose
last line is printed once. (The same runner with real worker processes, crashes and hangs:
tests/test_containment.py.)"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from dagr.cli import Interrupted
from dagr.failures import Failure, read_failures
from dagr.outputs import folder_output, scores_output
from dagr.runner import Outcome, Produce, RunOptions, Stage, StageRun, Workers
from dagr.sharding import Shard, exit_status

ITEMS = ["a", "b", "c", "d"]


def folder_stage(out: Path) -> Stage:
    """Items are names; an item is done when `<out>/<name>` exists; `d` is refused up front."""
    return Stage("test", "made", folder_output(out), key=str, name=str,
                 check=lambda item: Failure("refused", f"{item}: refused") if item == "d" else None,
                 done=lambda item: (out / item).exists())


def maker(out: Path) -> Produce:
    """Work that writes `<out>/<name>` for each item but `b`, which fails."""
    def make(todo: list[str], workers: Workers) -> Iterator[Outcome]:
        for item in todo:
            if item == "b":
                yield Outcome(item, Failure("broken", f"{item}: broken"))
                continue
            (out / item).write_text(item)
            yield Outcome(item)
    return make


def test_a_folder_stage_skips_finished_items_and_lists_failures(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a").write_text("earlier")
    run = StageRun(folder_stage(tmp_path / "out"), RunOptions(workers=0))
    run.run(ITEMS, maker(tmp_path / "out"))
    assert (run.share, run.skipped, run.finished) == (4, 1, 2)
    assert (tmp_path / "out" / "a").read_text() == "earlier" and (tmp_path / "out" / "c").exists()
    assert run.write() is True
    assert {k: f.kind for k, f in read_failures(tmp_path / "out" / "failures.csv",
                                                "video_id").items()} == {"b": "broken",
                                                                         "d": "refused"}
    assert run.summary(["labels.csv: 1 row left out"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == (f"2 of 4 videos made into {tmp_path / 'out'} (1 video(s) "
                                    "already done, skipped)")
    assert f"2 failed (listed in {tmp_path / 'out' / 'failures.csv'}):\n  b: broken\n  d: refused" in err
    assert "left out: labels.csv: 1 row left out" in err


def test_the_progress_bar_prints_its_last_line_once(tmp_path, capsys):
    run = StageRun(folder_stage(tmp_path / "out"), RunOptions(workers=0))
    run.run(["a", "c"], maker(tmp_path / "out"))
    err = capsys.readouterr().err
    assert err.count("2/2") == 1, err


def test_ctrl_c_says_what_was_kept(tmp_path):
    def stopped(todo: list[str], workers: Workers) -> Iterator[Outcome]:
        yield from maker(tmp_path / "out")(todo[:1], workers)
        raise KeyboardInterrupt

    run = StageRun(folder_stage(tmp_path / "out"), RunOptions(workers=0, progress=False))
    with pytest.raises(Interrupted) as stop:
        run.run(["a", "c"], stopped)
    assert str(stop.value) == (f"1 of 2 videos made into {tmp_path / 'out'} and kept; run the "
                               "same command again to do the rest")


def scored(todo: list[str], workers: Workers) -> Iterator[Outcome]:
    for item in todo:
        problem = f"{item}: broken" if item == "b" else ""
        row = {"video": item, "score": "" if problem else "1.5", "kind": "broken" if problem else "",
               "problem": problem}
        yield Outcome(item, Failure("broken", problem) if problem else None, row)
        if item == "c":
            raise KeyboardInterrupt


def file_stage(out: Path, resume: bool = False, retry: bool = False) -> StageRun:
    stage = Stage("score", "scored", scores_output(out, resume=resume), key=str, name=str,
                  key_column="video", fields=["video", "score", "kind", "problem"])
    return StageRun(stage, RunOptions(workers=0, resume=resume, retry_failed=retry,
                                      progress=False))


@pytest.mark.parametrize("retry, tried", [(False, ["d"]), (True, ["b", "d"])])
def test_a_file_stage_keeps_rows_and_resumes_them(tmp_path, retry, tried):
    out = tmp_path / "s.csv"
    with pytest.raises(Interrupted) as stop:
        file_stage(out).run(ITEMS, scored)
    partial = tmp_path / "s.csv.partial"
    assert str(stop.value) == (f"3 of 4 videos scored, kept in {partial}; run again with "
                               "--resume to continue")
    seen: list[str] = []

    def rest(todo: list[str], workers: Workers) -> Iterator[Outcome]:
        seen.extend(todo)
        yield from scored(todo, workers)

    run = file_stage(out, resume=True, retry=retry)
    run.run(ITEMS, rest)
    assert seen == tried and sorted(run.rows) == ITEMS and list(run.failures) == ["b"]
    assert run.write() and not partial.exists()
    assert read_failures(tmp_path / "s_failures.csv", "video")["b"].kind == "broken"


def test_items_that_crashed_before_are_suspects_by_the_name_their_worker_map_gives(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "failures.csv").write_text("video_id,kind,problem\nb,crashed,b: crashed\n"
                                      "c,broken,c: broken\n")
    seen: list[frozenset[str]] = []

    def produce(todo: list[str], workers: Workers) -> Iterator[Outcome]:
        seen.append(workers.supervision.suspects)
        yield from (Outcome(item) for item in todo)

    run = StageRun(folder_stage(out), RunOptions(workers=0))
    run.run(["a", "b", "c"], produce)  # the stage's own names
    run.run(["a", "b", "c"], produce, name=lambda item: f"frames/{item}")
    assert seen == [frozenset({"b"}), frozenset({"frames/b"})]


def test_under_torchrun_rows_left_out_make_the_merging_rank_exit_1(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    none = tmp_path / "failures.csv"  # no video failed anywhere
    assert exit_status(Shard(0, 2), True, merged=True, failures=none, left_out=True) == 1
    assert exit_status(Shard(0, 2), False, merged=True, failures=none) == 0
    assert exit_status(Shard(0, 2), True, merged=False, failures=none, left_out=True) == 0
