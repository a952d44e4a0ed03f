"""Ctrl-C: every script's entry (cli.run_script) turns it into one line and exit status 130;
frame extraction stopped by SIGINT, decoding processes included, leaves only finished videos
and no traceback. (Scoring under Ctrl-C: tests/test_sharding.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dagr import cli, files
from conftest import ROOT, write_video

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


def test_ctrl_c_while_extracting_keeps_finished_videos_only(tmp_path):
    for i in range(24):
        write_video(tmp_path / "videos" / f"m{i:02d}.avi", 60, size=(96, 128))
    out = tmp_path / "frames"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "extract_frame.py"), str(tmp_path / "videos"), "--out",
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
