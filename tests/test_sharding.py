"""Corpus-scale runs of the per-video stages: under `torchrun --nproc_per_node 2` (CPU) and with
`--shard I/N`, extract_frame.py, inference_sal.py (frames mode) and evaluate_vqa.py (scoring)
write exactly the files of one process; scoring survives SIGKILL (--resume scores every video
once) and Ctrl-C; the CSV merge is generic over columns.

Five videos (uneven over two shards), one of which cannot be read (shard 0 finds it).
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import evaluate_vqa as ev
import extract_frame as ef
import inference_sal
from dagr import scoring
from dagr.scoring import PARTIAL_FIELDS
from conftest import ROOT, write_video
from fakes import TINY_SIZE
from fakes_vqa import score_videos, scoring_checkpoints, stored_quality_set
from dagr.cli import EXIT_INTERRUPTED
from dagr.sharding import PartialRows, Shard, merge_csv, part_path

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SIZE = [str(n) for n in TINY_SIZE]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`: relative name -> bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def torchrun(script: str, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(ROOT / script), *options]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Five videos (one broken), their frames stored by one process, and tiny checkpoints."""
    base = tmp_path_factory.mktemp("corpus")
    videos = base / "videos"
    for i, frames in enumerate((9, 12, 10, 14)):
        write_video(videos / f"v{i}.avi", frames, size=(40, 56))
    (videos / "broken.avi").write_text("not a video")  # sorted first: shard 0 of 2 has it
    frames = base / "frames"
    assert ef.main(["--videos", str(videos), "--out", str(frames), "--size", *SIZE, "--workers", "0"]) == 1
    quality, sal = scoring_checkpoints(base, TINY_SIZE)
    return {"videos": videos, "frames": frames, "sal": sal, "quality": quality}


def extract_argv(corpus, out: Path, *options: str) -> list[str]:
    return ["--videos", str(corpus["videos"]), "--out", str(out), "--size", *SIZE, "--workers", "0", *options]


def sal_argv(corpus, out: Path, *options: str) -> list[str]:
    return ["--checkpoint", str(corpus["sal"]), "--frames", str(corpus["frames"]), "--out",
            str(out), "--device", "cpu", "--workers", "0", "--batch-size", "2", *options]


def score_argv(corpus, out: Path, *options: str) -> list[str]:
    return ["--checkpoint", str(corpus["quality"]), "--videos", str(corpus["videos"]), "--out",
            str(out), "--device", "cpu", "--batch-size", "2", *options]


@pytest.mark.slow
def test_extract_with_shards_and_torchrun_gives_the_files_of_one_process(corpus, tmp_path):
    one = tree(corpus["frames"])
    assert "failures.csv" in one and "v3/frames.json" in one
    sharded = tmp_path / "sharded"
    assert ef.main(extract_argv(corpus, sharded, "--shard", "0/2")) == 1  # it has broken.avi
    assert not (sharded / "failures.csv").exists()  # shard 1 is not done yet
    assert part_path(sharded / "failures.csv", Shard(0, 2)).is_file()
    assert ef.main(extract_argv(corpus, sharded, "--shard", "1/2")) == 0
    assert tree(sharded) == one  # merged, parts and markers gone
    done = torchrun("extract_frame.py", *extract_argv(corpus, tmp_path / "torchrun"))
    assert done.returncode == 1, done.stderr[-3000:]  # the rank that merges reports the failure
    assert tree(tmp_path / "torchrun") == one


@pytest.mark.slow
def test_saliency_maps_with_shards_and_torchrun_are_those_of_one_process(corpus, tmp_path):
    assert inference_sal.main(sal_argv(corpus, tmp_path / "one")) == 0
    one = tree(tmp_path / "one")
    assert {name.split("/")[0] for name in one} == {"v0", "v1", "v2", "v3"}
    for index in range(3):  # three shards of four videos: uneven
        assert inference_sal.main(sal_argv(corpus, tmp_path / "sharded", "--shard",
                                           f"{index}/3")) == 0
    assert tree(tmp_path / "sharded") == one
    done = torchrun("inference_sal.py", *sal_argv(corpus, tmp_path / "torchrun"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert tree(tmp_path / "torchrun") == one


@pytest.fixture(scope="module")
def scored(corpus, tmp_path_factory) -> dict[str, bytes]:
    """The scores and failures files of one process."""
    out = tmp_path_factory.mktemp("scored") / "scores.csv"
    assert ev.main(score_argv(corpus, out, "--workers", "0")) == 1
    files = tree(out.parent)
    assert set(files) == {"scores.csv", "scores_failures.csv", "scores.meta.json"}
    return files


@pytest.mark.slow
def test_scoring_with_shards_and_torchrun_gives_the_files_of_one_process(corpus, scored,
                                                                         tmp_path):
    with open(tmp_path / "check.csv", "wb") as handle:
        handle.write(scored["scores.csv"])
    rows = list(csv.DictReader(open(tmp_path / "check.csv")))
    assert [Path(r["video"]).name for r in rows] == ["v0.avi", "v1.avi", "v2.avi", "v3.avi"]
    (tmp_path / "check.csv").unlink()
    out = tmp_path / "sharded" / "scores.csv"
    out.parent.mkdir()
    assert ev.main(score_argv(corpus, out, "--workers", "0", "--shard", "1/2")) == 0
    assert not out.exists()
    assert ev.main(score_argv(corpus, out, "--workers", "0", "--shard", "0/2")) == 1
    assert tree(out.parent) == scored
    out = tmp_path / "torchrun" / "scores.csv"
    done = torchrun("evaluate_vqa.py", *score_argv(corpus, out, "--workers", "0"))
    assert done.returncode == 1, done.stderr[-3000:]
    assert tree(out.parent) == scored


def start_scoring(corpus, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "evaluate_vqa.py"),
                             *score_argv(corpus, out, *options)], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for_rows(partial: Path, rows: int, process: subprocess.Popen) -> None:
    """Until `partial` holds `rows` complete rows (the process still running)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if partial.is_file() and partial.read_text().count("\n") >= rows + 1:
            return
        time.sleep(0.005)
    pytest.fail(f"no {rows} rows in {partial} (exit {process.poll()})")


@pytest.fixture(scope="module")
def many(corpus, tmp_path_factory) -> dict[str, Path]:
    """24 videos (enough to stop a run in the middle) and their scores by one process."""
    base = tmp_path_factory.mktemp("many")
    for i in range(24):
        write_video(base / "videos" / f"m{i:02d}.avi", 40, size=(96, 128))
    setup = {**corpus, "videos": base / "videos"}
    out = base / "reference" / "scores.csv"
    assert ev.main(score_argv(setup, out, "--workers", "0", "--batch-size", "1")) == 0
    return {**setup, "reference": out}


@pytest.mark.slow
def test_scoring_killed_and_resumed_scores_every_video_once(many, tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    partial = out.with_name("scores.csv.partial")
    # one decoding worker: the kill is of the main process and its group (the worker, in its
    # own group, dies with the main process); with --workers 0 the rerun would decode the
    # video in hand at the kill in a worker process (tests/test_containment.py)
    process = start_scoring(many, out, "--workers", "1", "--batch-size", "1")
    wait_for_rows(partial, 2, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    kept = PartialRows(partial, PARTIAL_FIELDS)._complete_rows()
    assert 2 <= len(kept) < 24
    with open(partial, "a") as handle:
        handle.write("/a/torn/row.avi,3.")  # what a crash can leave
    decoded = []
    original = scoring.try_sample_video
    monkeypatch.setattr(scoring, "try_sample_video",
                        lambda path, *args, **kwargs: decoded.append(path) or original(
                            path, *args, **kwargs))
    assert ev.main(score_argv(many, out, "--workers", "0", "--batch-size", "1",
                              "--resume")) == 0
    assert sorted([str(p) for p in decoded] + [r["video"] for r in kept]) == sorted(
        str(p) for p in (many["videos"]).glob("*.avi"))
    assert out.read_bytes() == many["reference"].read_bytes()
    assert not partial.exists()


@pytest.mark.slow
def test_ctrl_c_while_scoring_keeps_the_scores_and_exits_130(many, tmp_path):
    out = tmp_path / "scores.csv"
    partial = out.with_name("scores.csv.partial")
    process = start_scoring(many, out, "--workers", "2", "--batch-size", "1")
    wait_for_rows(partial, 2, process)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: the main process and its workers
    _, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err and "Error" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "--resume" in last and str(partial) in last
    kept = PartialRows(partial, PARTIAL_FIELDS)._complete_rows()
    assert f"interrupted: {len(kept)} of 24 videos scored" in last
    assert not out.exists()
    assert ev.main(score_argv(many, out, "--workers", "0", "--batch-size", "1",
                              "--resume")) == 0
    assert out.read_bytes() == many["reference"].read_bytes()


def test_merge_is_generic_over_columns_and_keeps_line_ends(tmp_path):
    parts = []
    for index, rows in enumerate(([("b", "x", "decode")], [("a", "y, quoted", "open")])):
        part = part_path(tmp_path / "failures.csv", Shard(index, 2))
        with open(part, "w", newline="") as handle:
            writer = csv.writer(handle)  # \r\n, as dagr.failures.write_failures writes
            writer.writerow(["video_id", "problem", "kind"])
            writer.writerows(rows)
        parts.append(part)
    merge_csv(parts, tmp_path / "failures.csv", "video_id")
    assert (tmp_path / "failures.csv").read_bytes() == (
        b'video_id,problem,kind\r\na,"y, quoted",open\r\nb,x,decode\r\n')
    merge_csv([], tmp_path / "failures.csv", "video_id")
    assert not (tmp_path / "failures.csv").exists()


def test_nothing_to_do_is_an_error_naming_the_path(corpus, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"
    assert inference_sal.main(sal_argv(corpus, tmp_path / "maps")[:2] + [
        "--frames", str(missing), "--out", str(tmp_path / "maps"), "--device", "cpu"]) == 2
    assert f"error: {missing}: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()
    assert inference_sal.main(["--checkpoint", str(corpus["sal"]), "--frames", str(empty),
                               "--out", str(tmp_path / "maps"), "--device", "cpu"]) == 2
    assert f"error: {empty}: no video's frames stored there" in capsys.readouterr().err
    assert ef.main(["--videos", str(empty), "--out", str(tmp_path / "frames")]) == 2
    assert f"error: {empty}: no video file found" in capsys.readouterr().err
    assert ev.main(["--checkpoint", str(corpus["quality"]), "--videos", str(empty), "--out",
                    str(tmp_path / "s.csv"), "--device", "cpu"]) == 2
    assert f"error: {empty}: no video file found" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    labels = tmp_path / "KoNViD_1k_mos.csv"
    labels.write_text("flickr_id,mos\n1,3.0\n2,4.0\n")
    assert ef.main(["--dataset", "konvid", "--labels", str(labels), "--root", str(empty),
                    "--out", str(tmp_path / "frames")]) == 2
    assert f"error: {labels}: no row's video is under {empty}" in capsys.readouterr().err
    assert ev.main(["--checkpoint", str(corpus["quality"]), "--dataset", "konvid", "--labels",
                    str(labels), "--frames", str(empty), "--out", str(tmp_path / "eval"),
                    "--device", "cpu"]) == 2
    assert f"error: {empty}: no stored frames of any of the 2 videos of {labels}" in \
        capsys.readouterr().err


def test_default_decoding_workers_fit_the_machine_without_a_warning(corpus, tmp_path, recwarn):
    from dagr.workers import default_workers

    cores = len(os.sched_getaffinity(0))
    assert default_workers(1) == 0 and default_workers(0) == 0
    assert default_workers(3) == min(cores, 3) and default_workers(1000) == cores
    scores, _ = score_videos(corpus["quality"], [corpus["videos"]], tmp_path / "s.csv",
                             workers=None)
    assert len(scores) == 4
    assert not [w for w in recwarn if "worker" in str(w.message)]


def test_labelled_set_evaluation_with_shards_gives_the_files_of_one_process(corpus, tmp_path):
    labels, frames, _ = stored_quality_set(tmp_path / "set", n_videos=7)  # 4 + 3 videos
    # batch size 1: the CPU kernels may round a clip's score differently in another batch
    argv = ["--checkpoint", str(corpus["quality"]), "--dataset", "konvid", "--labels",
            str(labels), "--frames", str(frames), "--device", "cpu", "--workers", "0",
            "--batch-size", "1"]
    assert ev.main([*argv, "--out", str(tmp_path / "one")]) == 0
    one = tree(tmp_path / "one")
    assert set(one) == {"predictions_KoNViD-1k.csv", "scatter_KoNViD-1k.png", "results.md",
                        "results.csv", "results.json"}
    assert ev.main([*argv, "--out", str(tmp_path / "sharded"), "--shard", "1/2"]) == 0
    assert not (tmp_path / "sharded" / "results.csv").exists()
    assert ev.main([*argv, "--out", str(tmp_path / "sharded"), "--shard", "0/2"]) == 0
    assert tree(tmp_path / "sharded") == one


def test_shards_cover_every_video_once_and_combine_with_torchrun(monkeypatch):
    from dagr.sharding import current_shard, parse_shard, shard_device

    videos = [f"v{i}" for i in range(7)]
    assert sorted(sum((Shard(i, 3).take(videos) for i in range(3)), [])) == videos
    assert parse_shard("2/4") == Shard(2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(Exception, match="I/N|0..N-1"):
            parse_shard(bad)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_shard() == Shard(1, 2)
    assert current_shard(Shard(3, 4)) == Shard(7, 8)  # a SLURM task split among its 2 ranks
    assert shard_device(torch.device("cpu")) == torch.device("cpu")


def test_a_merge_cut_off_is_finished_by_any_shard_run_again(corpus, tmp_path, monkeypatch):
    from dagr import sharding

    out = tmp_path / "frames"
    assert ef.main(extract_argv(corpus, out, "--shard", "0/2")) == 1
    with monkeypatch.context() as patch:  # shard 1 dies after its marker, before the merge
        patch.setattr(sharding, "merge_if_complete", lambda outputs, count: False)
        assert ef.main(extract_argv(corpus, out, "--shard", "1/2")) == 0
    assert not (out / "failures.csv").exists()
    assert ef.main(extract_argv(corpus, out, "--shard", "0/2")) == 1  # its videos are done
    assert tree(out) == tree(corpus["frames"])
