"""No single video can stop or hang a corpus run. Every per-video stage runs as a user runs it
(a subprocess) while tests/fault_site/sitecustomize.py strikes a fault (tests/faults.py) in the
process that handles a chosen file: a segmentation fault, an abort, exit status 1, a hang past
--video-timeout and the OOM killer's SIGKILL, each on a file of its own in one run. Each bad
video is reported with its kind (`crashed` with the signal or status, `timed-out` with the
limit) in the stage's failures CSV and in the summary; every other video is done; the exit
status is 1; no traceback; nothing half-written is left; no worker process outlives the run.

Also: a crash in the main process (--workers 0) ends that run, and the rerun contains it;
resumed scoring does not try a crashed video again unless --retry-failed; Ctrl-C in every
stage gives the one `interrupted:` line and exit status 130.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

import extract_frame as ef
from conftest import write_video
from fakes import TINY_SIZE
from fakes_vqa import scoring_checkpoints, stored_quality_set
from processes import run, stage, workers_left
from dagr.outputs import FAILURES
from dagr.cli import EXIT_INTERRUPTED
from dagr.failures import read_failures
from dagr.files import PANDAS_READ_NAMES
from dagr.sharding import PartialRows
from dagr.scoring import PARTIAL_FIELDS

SIZE = [str(n) for n in TINY_SIZE]
LIMIT = 3  # --video-timeout of the runs with a hang
EXPECTED = {  # fault -> (kind, words of the problem)
    "segv": ("crashed", "crashed: the worker process handling it died of SIGSEGV (Segmentation fault)"),
    "abort": ("crashed", "crashed: the worker process handling it died of SIGABRT (Aborted)"),
    "exit": ("crashed", "crashed: the worker process handling it exited with status 1"),
    "oom-kill": ("crashed", "crashed: the worker process handling it was killed (SIGKILL; the "
                 "kernel's out-of-memory killer sends it"),
    "hang": ("timed-out", f"timed out: no progress for {LIMIT} s"),
}
GOOD = ["good_a", "good_b"]


def faults_on(names: dict[str, str]) -> dict[str, str]:
    """{bad name: fault} for the bad videos' names (`bad_<fault>` + suffix)."""
    return {name: fault for fault, name in names.items()}


def assert_contained(done: subprocess.CompletedProcess, listing: Path, column: str,
                     bad: dict[str, str]) -> dict:
    """Exit status 1, no traceback, and each bad video (id -> fault) listed with its kind and
    problem, in the failures CSV `listing` and on stderr. Returns the listing."""
    assert done.returncode == 1, done.stderr[-4000:]
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr[-4000:]
    failures = read_failures(listing, column)
    assert {key: failure.kind for key, failure in failures.items()} == {
        key: EXPECTED[fault][0] for key, fault in bad.items()}
    for key, fault in bad.items():
        assert EXPECTED[fault][1] in failures[key].problem
        assert failures[key].problem in done.stderr
    return failures


def no_half_written(folder: Path) -> bool:
    return not any(p.name.startswith(".") and p.name.endswith(".tmp") for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Seven small videos (two good, one per fault) with their stored frames, a stored labelled
    set, and tiny checkpoints."""
    base = tmp_path_factory.mktemp("containment")
    videos = base / "videos"
    for name in GOOD + [f"bad_{fault}" for fault in EXPECTED]:
        write_video(videos / f"{name}.avi", 12, size=(40, 56))
    frames = base / "frames"
    assert ef.main(["--videos", str(videos), "--out", str(frames), "--size", *SIZE, "--workers", "0"]) == 0
    quality, sal = scoring_checkpoints(base, TINY_SIZE)
    labels, set_frames, _ = stored_quality_set(base / "set", n_videos=9)
    return {"videos": videos, "frames": frames, "quality": quality, "sal": sal,
            "labels": labels, "set_frames": set_frames}


BAD_FILES = {fault: f"bad_{fault}.avi" for fault in EXPECTED}
BAD_IDS = {fault: f"bad_{fault}" for fault in EXPECTED}


# ----------------------------------------------------------------------------- each stage

@pytest.mark.slow
def test_extraction_contains_each_fault(corpus, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(corpus["videos"], videos)
    write_video(videos / "bad_write.avi", 12, size=(40, 56))  # dies half-way through its PNGs
    out = tmp_path / "frames"
    done = run("extract_frame.py", "--videos", str(videos), "--out", str(out), "--size", *SIZE,
               "--workers", "2", "--video-timeout", str(LIMIT),
               faults={"open": faults_on(BAD_FILES), "write": {"bad_write": "segv"}})
    bad = {**{BAD_IDS[f]: f for f in EXPECTED}, "bad_write": "segv"}
    assert_contained(done, out / FAILURES, "video_id", bad)
    assert done.stdout.startswith(f"2 of {2 + len(bad)} videos sampled")
    assert sorted(p.parent.name for p in out.glob("*/frames.json")) == GOOD
    assert no_half_written(out) and sorted(p.name for p in out.iterdir()) == [
        FAILURES, *GOOD]


@pytest.mark.slow
def test_scoring_contains_each_fault(corpus, tmp_path):
    out = tmp_path / "scores.csv"
    done = run("evaluate_vqa.py", "--checkpoint", str(corpus["quality"]), "--videos",
               str(corpus["videos"]), "--out", str(out), "--device", "cpu", "--batch-size", "2",
               "--workers", "2", "--video-timeout", str(LIMIT),
               faults={"open": faults_on(BAD_FILES)})
    bad = {str(corpus["videos"] / BAD_FILES[f]): f for f in EXPECTED}
    assert_contained(done, tmp_path / "scores_failures.csv", "video", bad)
    scores = pd.read_csv(out, **PANDAS_READ_NAMES)
    assert list(scores["video"]) == [str(corpus["videos"] / f"{g}.avi") for g in GOOD]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv", "scores.meta.json",
                                                          "scores_failures.csv"]


@pytest.mark.slow
def test_saliency_maps_contain_each_fault(corpus, tmp_path):
    out = tmp_path / "maps"
    done = run("inference_sal.py", "--checkpoint", str(corpus["sal"]), "--frames",
               str(corpus["frames"]), "--out", str(out), "--device", "cpu", "--batch-size", "2",
               "--workers", "2", "--video-timeout", str(LIMIT),
               faults={"read": faults_on(BAD_IDS)})
    assert_contained(done, out / "failures.csv", "video_id",
                     {BAD_IDS[f]: f for f in EXPECTED})
    assert sorted(p.name for p in out.iterdir()) == ["failures.csv", *GOOD]
    assert all(len(list((out / g).glob("*.png"))) == 8 for g in GOOD)


@pytest.mark.slow
def test_labelled_set_evaluation_contains_each_fault(corpus, tmp_path):
    out = tmp_path / "eval"
    ids = {fault: str(1001 + i) for i, fault in enumerate(EXPECTED)}  # of 1000 ... 1008
    done = run("evaluate_vqa.py", "--checkpoint", str(corpus["quality"]), "--dataset", "konvid",
               "--labels", str(corpus["labels"]), "--frames", str(corpus["set_frames"]),
               "--out", str(out), "--device", "cpu", "--batch-size", "2", "--workers", "2",
               "--video-timeout", str(LIMIT), faults={"read": faults_on(ids)})
    assert_contained(done, out / "failures.csv", "video_id", {v: f for f, v in ids.items()})
    predicted = pd.read_csv(out / "predictions_KoNViD-1k.csv", dtype={"video_id": str})
    assert sorted(predicted["video_id"]) == ["1000", "1006", "1007", "1008"]


@pytest.mark.slow
def test_overlay_videos_contain_each_fault(corpus, tmp_path):
    out = tmp_path / "renders"
    done = run("inference_sal.py", "--checkpoint", str(corpus["sal"]), "--videos",
               str(corpus["videos"]), "--all-frames", "--out", str(out), "--device", "cpu",
               "--video-timeout", str(LIMIT), faults={"open": faults_on(BAD_FILES)})
    assert_contained(done, out / "failures.csv", "video_id",
                     {BAD_IDS[f]: f for f in EXPECTED})
    assert sorted(p.name for p in out.iterdir()) == ["failures.csv"] + [f"{g}.mp4" for g in GOOD]


# ----------------------------------------------------------------------------- in this process

@pytest.mark.slow
@pytest.mark.parametrize("script", ["extract_frame.py", "evaluate_vqa.py"])
def test_a_crash_in_the_main_process_ends_that_run_and_the_rerun_contains_it(
        corpus, tmp_path, script):
    """--workers 0 decodes in the main process, which a native crash ends; the video it was on
    stays in the journal, and the rerun decodes in a worker process, where the crash is
    contained (and then the same for a video recorded as crashed)."""
    out = tmp_path / ("frames" if script == "extract_frame.py" else "scores.csv")
    options = (["--videos", str(corpus["videos"]), "--out", str(out), "--size", *SIZE]
               if script == "extract_frame.py" else
               ["--checkpoint", str(corpus["quality"]), "--videos", str(corpus["videos"]),
                "--out", str(out), "--device", "cpu", "--resume"])
    faults = {"open": {BAD_FILES["segv"]: "segv"}}
    first = run(script, *options, "--workers", "0", faults=faults)
    assert first.returncode == -signal.SIGSEGV
    second = run(script, *options, "--workers", "0", faults=faults)
    bad = str(corpus["videos"] / BAD_FILES["segv"])
    assert f"note: an earlier run stopped while handling {bad} in its main process" in second.stderr
    assert second.returncode == 1 and "Traceback" not in second.stderr
    listing = (out / FAILURES if script == "extract_frame.py"
               else tmp_path / "scores_failures.csv")
    failures = read_failures(listing, "video_id" if script == "extract_frame.py" else "video")
    assert [f.kind for f in failures.values()] == ["crashed"] and len(failures) == 1
    assert "SIGSEGV" in next(iter(failures.values())).problem
    assert not any(p.name.endswith(".in-flight") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_resumed_scoring_does_not_retry_a_crashed_video_unless_asked(corpus, tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a_crash.avi", 12, size=(40, 56))
    for name in ("b", "c", "z_hang"):
        write_video(videos / f"{name}.avi", 12, size=(40, 56))
    out, log = tmp_path / "scores.csv", tmp_path / "struck.log"
    options = ["--checkpoint", str(corpus["quality"]), "--videos", str(videos), "--out",
               str(out), "--device", "cpu", "--batch-size", "1", "--workers", "1"]
    crash = {"open": {"a_crash.avi": "segv"}}
    # the crash is recorded, then the run hangs on z_hang until Ctrl-C
    process = stage("evaluate_vqa.py", *options, faults={"open": {**crash["open"],
                                                                   "z_hang.avi": "hang"}},
                    log=log)
    partial = out.with_name("scores.csv.partial")
    deadline = time.monotonic() + 300
    while not (log.is_file() and "z_hang" in log.read_text()
               and len(PartialRows(partial, PARTIAL_FIELDS)._complete_rows()) == 3):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, err[-3000:]
    kept = PartialRows(partial, PARTIAL_FIELDS)._complete_rows()
    assert {Path(r["video"]).name: r["kind"] for r in kept} == {"a_crash.avi": "crashed",
                                                               "b.avi": "", "c.avi": ""}
    shutil.copy(partial, tmp_path / "kept.partial")
    resumed = run("evaluate_vqa.py", *options, "--resume", faults=crash, log=log)
    assert resumed.returncode == 1
    assert "1 video(s) that failed in the earlier run are not tried again" in resumed.stderr
    assert log.read_text().count("a_crash.avi") == 1  # not tried again
    assert read_failures(tmp_path / "scores_failures.csv", "video")[
        str(videos / "a_crash.avi")].kind == "crashed"
    assert len(pd.read_csv(out)) == 3
    shutil.copy(tmp_path / "kept.partial", partial)
    retried = run("evaluate_vqa.py", *options, "--workers", "0", "--resume", "--retry-failed",
                  faults=crash, log=log)
    assert retried.returncode == 1 and "Traceback" not in retried.stderr
    assert log.read_text().count("a_crash.avi") == 2  # tried again, in a worker process
    assert "SIGSEGV" in read_failures(tmp_path / "scores_failures.csv", "video")[
        str(videos / "a_crash.avi")].problem


# ----------------------------------------------------------------------------- Ctrl-C

CTRL_C_STAGES = {
    "extract": lambda c, out: ["extract_frame.py", "--videos", str(c["videos"]), "--out", str(out),
                               "--size", *SIZE, "--workers", "2"],
    "score": lambda c, out: ["evaluate_vqa.py", "--checkpoint", str(c["quality"]), "--videos",
                             str(c["videos"]), "--out", str(out / "s.csv"), "--device", "cpu",
                             "--workers", "2"],
    "maps": lambda c, out: ["inference_sal.py", "--checkpoint", str(c["sal"]), "--frames",
                            str(c["frames"]), "--out", str(out), "--device", "cpu",
                            "--workers", "2"],
    "sets": lambda c, out: ["evaluate_vqa.py", "--checkpoint", str(c["quality"]), "--dataset",
                            "konvid", "--labels", str(c["labels"]), "--frames",
                            str(c["set_frames"]), "--out", str(out), "--device", "cpu",
                            "--workers", "2"],
    "render": lambda c, out: ["inference_sal.py", "--checkpoint", str(c["sal"]), "--videos",
                              str(c["videos"]), "--all-frames", "--out", str(out), "--device",
                              "cpu"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CTRL_C_STAGES))
def test_ctrl_c_while_a_worker_hangs_gives_one_line_and_130_in_every_stage(corpus, tmp_path,
                                                                           name):
    """Ctrl-C while a worker is stuck in a (hung) decoder: the run ends at once."""
    log, marker = tmp_path / "struck.log", uuid.uuid4().hex
    hang = ({"read": {"1003": "hang"}} if name == "sets" else
            {"read": {"bad_hang": "hang"}} if name == "maps" else
            {"open": {"bad_hang.avi": "hang"}})
    process = stage(*CTRL_C_STAGES[name](corpus, tmp_path / "out"), faults=hang, log=log,
                    marker=marker)
    deadline = time.monotonic() + 300
    while not log.is_file():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: the main process's group
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted: ")
    assert not workers_left(marker)
    assert no_half_written(tmp_path)
