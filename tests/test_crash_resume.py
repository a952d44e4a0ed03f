"""Crash safety: a training process killed with SIGKILL (mid-epoch, in the middle of writing a
checkpoint, before its first checkpoint, or at whatever moment a timer hits) resumes with
--resume and ends with exactly the weights, log and best checkpoint of an uninterrupted run
(CPU, same seed, no loader workers); a checkpoint is never half-written.

The killed runs are separate processes (trainer_driver.py sends SIGKILL to itself at a chosen
point; one run of the plain command line is killed from outside on a timer); the uninterrupted
and the resumed runs call the trainers' main() here, with one torch thread like the killed ones.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import train_lsvq
import train_sal
from fakes import TINY_SIZE, tiny_dhf1k
from fakes_vqa import stored_quality_set, train_argv
from dagr.checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("trainer_driver.py")
EPOCHS = 3
SAL_STEPS_PER_EPOCH = 3  # 3 videos x 2 clips, 2 clips per batch
LSVQ_STEPS_PER_EPOCH = 2  # 5 training videos, 4 per batch


def sal_argv(root: Path, out: Path) -> list[str]:
    return ["--root", str(root), "--out", str(out), "--saliency-width", "4",
            "--size", *map(str, TINY_SIZE), "--epochs", str(EPOCHS), "--clip-len", "6",
            "--clips-per-video", "2", "--val-clips", "1", "--batch-size", "2", "--lr", "3e-3",
            "--warmup", "0.34", "--registers", "2", "--workers", "0", "--device", "cpu"]


def lsvq_argv(quality: tuple[Path, Path, Path], out: Path) -> list[str]:
    labels, frames, _ = quality
    return train_argv(labels, frames, None, out, "--epochs", str(EPOCHS))


@pytest.fixture(scope="module")
def sal_reference(tmp_path_factory, one_thread) -> tuple[Path, Path]:  # noqa: F811
    """(data root, output of an uninterrupted run)."""
    base = tmp_path_factory.mktemp("sal")
    root = tiny_dhf1k(base / "DHF1K", n_train=3, n_val=2, frames=8)
    assert train_sal.main(sal_argv(root, base / "reference")) == 0
    return root, base / "reference"


@pytest.fixture(scope="module")
def lsvq_reference(tmp_path_factory, one_thread  # noqa: F811
                   ) -> tuple[tuple[Path, Path, Path], Path]:
    """(stored quality set, output of an uninterrupted run)."""
    base = tmp_path_factory.mktemp("lsvq")
    quality = stored_quality_set(base / "set")
    assert train_lsvq.main(lsvq_argv(quality, base / "reference")) == 0
    return quality, base / "reference"


def killed_run(trainer: str, argv: list[str], *driver_options: str) -> None:
    """Run the trainer in a process that kills itself with SIGKILL where the options say."""
    done = subprocess.run([sys.executable, str(DRIVER), trainer, *driver_options, "--", *argv],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def log_rows(out: Path) -> list[dict]:
    return pd.read_csv(out / "log.csv").drop(columns="seconds", errors="ignore").to_dict("records")


def assert_same_run(out: Path, reference: Path) -> None:
    """Same final and best weights, optimizer state and log as the uninterrupted run."""
    for name in ("last.pt", "best.pt"):
        got, want = load_checkpoint(out / name), load_checkpoint(reference / name)
        assert got["epoch"] == want["epoch"]
        assert got["model_state"].keys() == want["model_state"].keys()
        for key, tensor in want["model_state"].items():
            assert torch.equal(got["model_state"][key], tensor), (name, key)
    got, want = (load_checkpoint(p / "last.pt")["optimizer_state"]["state"]
                 for p in (out, reference))
    assert all(torch.equal(got[k]["exp_avg_sq"], want[k]["exp_avg_sq"]) for k in want)
    assert log_rows(out) == log_rows(reference)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model_state": {"w": torch.zeros(3)}, "epoch": 1})
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model_state": {"w": torch.ones(3)}, "epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temporary file is gone
    kept = load_checkpoint(path)
    assert kept["epoch"] == 1 and torch.equal(kept["model_state"]["w"], torch.zeros(3))


@pytest.mark.slow
def test_saliency_training_killed_mid_epoch_resumes_exactly(sal_reference, tmp_path) -> None:
    root, reference = sal_reference
    argv = sal_argv(root, tmp_path)
    killed_run("train_sal", argv, "--kill-after-step", str(SAL_STEPS_PER_EPOCH + 1))
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # died in the second epoch
    assert train_sal.main([*argv, "--resume"]) == 0
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_saliency_training_killed_while_writing_a_checkpoint_resumes_exactly(
        sal_reference, tmp_path) -> None:
    root, reference = sal_reference
    argv = sal_argv(root, tmp_path)
    # the first epoch saves best.pt (and links last.pt to it); the second save is epoch 2's
    killed_run("train_sal", argv, "--kill-in-save", "2")
    half = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(half) == 1  # the half-written temporary file of the killed save ...
    for name in ("best.pt", "last.pt"):  # ... replaced neither checkpoint
        assert load_checkpoint(tmp_path / name)["epoch"] == 1
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(half[0])
    assert len(log_rows(tmp_path)) == 2  # epoch 2 was logged before the checkpoint
    assert train_sal.main([*argv, "--resume"]) == 0
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_saliency_command_killed_from_outside_resumes_exactly(sal_reference, tmp_path) -> None:
    """The plain command line, killed on a timer a little after its first checkpoint."""
    root, reference = sal_reference
    argv = sal_argv(root, tmp_path)
    process = subprocess.Popen([sys.executable, "train_sal.py", *argv], cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        process.kill()  # SIGKILL
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] < EPOCHS
    assert train_sal.main([*argv, "--resume"]) == 0
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_saliency_training_killed_before_its_first_checkpoint_starts_again(
        sal_reference, tmp_path, capsys) -> None:
    root, reference = sal_reference
    argv = sal_argv(root, tmp_path)
    killed_run("train_sal", argv, "--kill-in-save", "1")
    assert not (tmp_path / "last.pt").exists() and len(log_rows(tmp_path)) == 1
    assert train_sal.main([*argv, "--resume"]) == 0
    assert "does not exist yet; starting from the first epoch" in capsys.readouterr().err
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_quality_training_killed_mid_epoch_resumes_exactly(lsvq_reference, tmp_path) -> None:
    quality, reference = lsvq_reference
    argv = lsvq_argv(quality, tmp_path)
    killed_run("train_lsvq", argv, "--kill-after-step", str(LSVQ_STEPS_PER_EPOCH + 1))
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert train_lsvq.main([*argv, "--resume"]) == 0
    assert_same_run(tmp_path, reference)
    assert pd.read_csv(tmp_path / "predictions_test.csv").equals(
        pd.read_csv(reference / "predictions_test.csv"))
