"""Ctrl-C: every script's entry (cli.run_script) turns it into one line and exit status 130;
frame extraction stopped by SIGINT, decoding processes included, leaves only finished videos
and no traceback; scoring with several decoding processes, interrupted at many moments, ends
the same way every time. (Ctrl-C in every stage while a worker hangs:
tests/test_containment.py; scoring resumed after Ctrl-C: tests/test_sharding.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dagr import cli, files
from dagr.scoring import PARTIAL_FIELDS
from dagr.sharding import PartialRows
from conftest import ROOT, write_video
from fakes import TINY_SIZE
from fakes_vqa import scoring_checkpoints
from processes import stage, workers_left

SCRIPTS = ["extract_frame.py", "train_sal.py", "inference_sal.py", "train_lsvq.py",
           "evaluate_vqa.py", "demo.py", "benchmark.py"]


@pytest.mark.parametrize("message, expected", [
    ("3 of 9 videos scored, kept in s.csv.partial", "interrupted: 3 of 9 videos scored, kept in s.csv.partial"),
    (None, "interrupted: stopped before the end; finished work is kept (run again to continue)"),
])
def test_run_script_turns_ctrl_c_into_one_line_and_130(message, expected, capsys, monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep the test's own handler

    def main() -> int:
        raise cli.Interrupted(message) if message else KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        cli.run_script(main)
    assert stopped.value.code == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.strip().splitlines() == [expected]
    with pytest.raises(SystemExit) as finished:
        cli.run_script(lambda: 1)
    assert finished.value.code == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_enters_through_run_script(script):
    text = (ROOT / script).read_text()
    assert 'if __name__ == "__main__":\n    run_script(main)' in text
    after_future = text.index("from __future__") + 1
    imports = [text.find("\nimport "), text.find("\nfrom ", after_future)]
    assert text.index("quiet_start()") < min(i for i in imports if i >= 0)  # before any import


@pytest.mark.slow
def test_ctrl_c_while_extracting_keeps_finished_videos_only(tmp_path):
    for i in range(24):
        write_video(tmp_path / "videos" / f"m{i:02d}.avi", 60, size=(96, 128))
    out = tmp_path / "frames"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "extract_frame.py"), "--videos", str(tmp_path / "videos"), "--out",
         str(out), "--workers", "2", "--size", "32", "48"], text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/frames.json"))) < 2 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: the main process and its workers
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "videos sampled into" in last
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert all(not p.name.startswith(".") for p in folders)  # no half-written video
    assert all((p / "frames.json").is_file() and len(list(p.glob("*.png"))) == 8 for p in folders)
    assert 2 <= len(folders) < 24 and not (out / "failures.csv").exists()


def test_leftovers_of_stopped_atomic_writes_are_removed_and_nothing_else(tmp_path):
    for name in (".a.x1.tmp", ".a.b.x2.tmp", ".c.x3.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / ".d.x4.tmp").write_text("half a file")
    (tmp_path / "a").mkdir()
    files.remove_leftovers([tmp_path / "a", tmp_path / "d", tmp_path / "missing" / "e"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.b.x2.tmp", ".c.x3.tmp", "a"]


TRIES = 21
MOMENTS = [("importing", -1, 0.6), ("starting", 0, 0.0), ("first row", 1, 0.0),
           ("rows", 3, 0.0), ("after", 0, 0.4), ("after", 0, 1.5), ("after", 2, 0.7)]
# (name, rows in the partial file to wait for (-1: none, not even the file), then sleep)


@pytest.mark.slow
def test_ctrl_c_while_scoring_with_several_workers_ends_the_same_way_every_time(tmp_path):
    """SIGINT to the process group of a scoring run with three decoding processes, at moments
    from the workers' start to the last video (a hung one, so that the run is always still
    going): each time exit status 130, the one `interrupted:` line, no traceback, no worker
    that aborts on the way out or outlives the run."""
    for i in range(12):
        write_video(tmp_path / "videos" / f"m{i:02d}.avi", 16, size=(48, 64))
    write_video(tmp_path / "videos" / "z_hang.avi", 16, size=(48, 64))
    quality, _ = scoring_checkpoints(tmp_path, TINY_SIZE)
    out = tmp_path / "scores.csv"
    partial = out.with_name("scores.csv.partial")
    endings = []
    for attempt in range(TRIES):
        name, rows, pause = MOMENTS[attempt % len(MOMENTS)]
        marker = f"ctrl-c-{attempt}-{os.getpid()}"
        partial.unlink(missing_ok=True)
        process = stage("evaluate_vqa.py", "--checkpoint", str(quality), "--videos",
                        str(tmp_path / "videos"), "--out", str(out), "--device", "cpu",
                        "--workers", "3", "--batch-size", "2",
                        faults={"open": {"z_hang.avi": "hang"}}, marker=marker)
        deadline = time.monotonic() + 300
        while rows >= 0 and not (
                partial.is_file()
                and len(PartialRows(partial, PARTIAL_FIELDS)._complete_rows()) >= rows):
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.005)
        time.sleep(pause)
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: the main process and its group
        _, err = process.communicate(timeout=120)
        lines = err.strip().splitlines()
        endings.append((name, process.returncode))
        assert process.returncode == cli.EXIT_INTERRUPTED, (name, err[-3000:])
        assert "Traceback" not in err and "terminate called" not in err, (name, err[-3000:])
        if partial.is_file():
            kept = len(PartialRows(partial, PARTIAL_FIELDS)._complete_rows())
            assert lines[-1].startswith(f"interrupted: {kept} of 13 videos scored"), (name, lines)
        else:  # still loading its modules
            assert lines[-1] == "interrupted: stopped while starting; nothing was done", lines
        assert not workers_left(marker)
    assert len(endings) == TRIES
