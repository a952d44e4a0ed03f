"""Both trainers under `torchrun --standalone --nproc_per_node 2` on the CPU (Gloo), each rank
instrumented by trainer_driver.py: every epoch covers every training sample exactly once across
the ranks, the ranks hold the same weights after every optimizer step, only rank 0 writes, and
rank 0 takes the steps (gradients, losses) of one process given the same global batch.

The shards are uneven on purpose (5 training clips or videos, one per rank and step: rank 0 takes
three steps per epoch, rank 1 two), so DDP's join, the optimizer-state hand-over after each
epoch and a learning-rate schedule planned for the longest shard are all exercised.

What "the same as one process" can mean: DDP averages gradients, so a run of W ranks with B
clips each takes the steps of one process with W * B clips per batch exactly when the model's
output for a clip does not depend on the other clips of its batch, and the loss is a mean of
per-clip terms. BatchNorm breaks the first (each rank normalises with its own batch's
statistics; --sync-bn fixes that on GPUs, PyTorch's SyncBatchNorm does not run on CPUs), and
train_lsvq's PLCC and ranking terms break the second (they see each rank's batch). So the
step-by-step comparisons run with the driver's --per-clip model (GroupNorm for BatchNorm, no
dropout) and, for train_lsvq, the L1 term only; the real saliency network, with its BatchNorm,
is compared within a tolerance, and its first gradient is shown to differ.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import train_lsvq
import train_sal
from fakes import TINY_SIZE, tiny_dhf1k
from fakes_vqa import SIZE, stored_quality_set
from dagr.distributed import Distributed, wrap_for_training
from trainer_driver import BUILDERS, per_clip, trace

pytestmark = pytest.mark.usefixtures("one_thread")

DRIVER = Path(__file__).with_name("trainer_driver.py")
RANKS = 2
EPOCHS = 3
# gradient clipping off: it would hide a wrongly scaled gradient (the clipped norm is the same)
SAL_OPTIONS = ["--saliency-width", "4", "--size", *map(str, TINY_SIZE), "--epochs", str(EPOCHS),
               "--clip-len", "6", "--clips-per-video", "1", "--val-clips", "1", "--lr", "3e-3",
               "--warmup", "0.5", "--registers", "2", "--workers", "0", "--device", "cpu",
               "--clip-grad", "0"]
LSVQ_OPTIONS = ["--dataset", "konvid", "--backbone", "resnet18", "--no-pretrained",
                "--size", *map(str, SIZE), "--workers", "0", "--device", "cpu", "--lr", "1e-3",
                "--warmup", "0", "--test-fraction", "0.34", "--epochs", str(EPOCHS),
                "--clip-grad", "0", "--plcc-weight", "0", "--rank-weight", "0"]
# 12 videos: 5 for training, 3 for validation, 4 for testing
# How near "the same as one process" comes in floating point: the first step starts from the
# same weights, so its gradient differs only by the order of summation. Later steps start from
# weights that differ by rounding, which Adam turns into full-size steps wherever a gradient
# component is near zero (its first update is lr * sign(g)): up to 1.5 % on the gradient norms
# of the first epoch (the registers' per-position write starts at zero, so many components start
# there) and 1 % on the losses after three epochs. A wrongly weighted step (the last of an
# epoch, which only rank 0 takes, at half its gradient) shows as 50 % on that step.
FIRST_STEP, FIRST_EPOCH, LOSSES = 1e-5, 3e-2, 2e-2
SAL_FILES = {"best.pt", "last.pt", "log.csv", "curves.png"}  # curves.png: drawn by rank 0 only
LSVQ_FILES = SAL_FILES | {"predictions_test.csv", "results.md", "results.csv", "results.json",
                          "splits.csv"}


@pytest.fixture(scope="module")
def saliency_set(tmp_path_factory) -> Path:
    return tiny_dhf1k(tmp_path_factory.mktemp("dhf1k") / "DHF1K", n_train=5, n_val=2, frames=8)


@pytest.fixture(scope="module")
def quality_set(tmp_path_factory) -> tuple[Path, Path, Path]:
    return stored_quality_set(tmp_path_factory.mktemp("quality"))


# About one run in 30 on a busy 2-core machine, a rank whose work is all done (its trace written,
# after destroy_process_group) aborts while the interpreter shuts down, with this message from
# C++; nothing of the project runs then. Such a run is repeated once.
TEARDOWN_ABORT = "terminate called without an active exception"


def torchrun(trainer: str, base: Path, driver_options: list[str], options: list[str],
             tries: int = 2) -> list[list[dict]]:
    """Run the trainer on RANKS CPU processes; returns each rank's trace events."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(RANKS), str(DRIVER), trainer, "--trace", str(base / "trace"),
               *driver_options, "--", *options]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    traces = [base / f"trace.{rank}.json" for rank in range(RANKS)]
    finished = all(path.is_file() for path in traces)
    if done.returncode and TEARDOWN_ABORT in done.stderr and finished and tries > 1:
        shutil.rmtree(base)
        base.mkdir()
        return torchrun(trainer, base, driver_options, options, tries - 1)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(path.read_text()) for path in traces]


def epochs_of(events: list[dict]) -> list[dict]:
    """The trace of one rank as one dict per epoch: indices, grads (norms), steps (weight
    digests), end, loss."""
    epochs = []
    for event in events:
        if "epoch" in event:
            epochs.append({"indices": event["epoch"], "grads": [], "steps": []})
        elif "grad" in event:
            epochs[-1]["grads"].append(event["grad"])
        elif "step" in event:
            epochs[-1]["steps"].append(event["step"])
        else:
            epochs[-1].update(end=event["end"], loss=event["loss"])
    return epochs


def check_ranks_agree(traces: list[list[dict]], samples: int) -> None:
    """Every epoch: the ranks' shards partition the samples; the ranks' weights agree after
    every step each took, and at the end of the epoch; they report the same loss. At least one
    epoch had uneven steps (rank 1 ran out of batches first)."""
    ranks = [epochs_of(events) for events in traces]
    assert all(len(epochs) == EPOCHS for epochs in ranks)
    uneven = False
    for epoch in zip(*ranks):
        shards = [e["indices"] for e in epoch]
        assert sorted(sum(shards, [])) == list(range(samples))  # each sample once
        main, *others = epoch
        for other in others:
            taken = len(other["steps"])
            assert other["steps"] == main["steps"][:taken]
            uneven |= taken < len(main["steps"])
            assert other["end"] == main["end"] == main["steps"][-1]
            assert other["loss"] == main["loss"]
    assert uneven


def single_process(trainer, argv: list[str], monkeypatch, per_clip_model: bool) -> list[dict]:
    """The trainer's main in this process (one torch thread), optionally on the per-clip model;
    returns its trace, one dict per epoch."""
    if per_clip_model:
        build = getattr(trainer, BUILDERS[trainer.__name__])
        monkeypatch.setattr(trainer, BUILDERS[trainer.__name__],
                            lambda *a, **k: per_clip(build(*a, **k)))
    events: list[dict] = []
    stop = trace(events)
    try:
        assert trainer.main(argv) == 0
    finally:
        stop()
    return epochs_of(events)


def losses(out: Path) -> list[float]:
    return pd.read_csv(out / "log.csv")["train_loss"].tolist()


def check_same_steps(ddp: list[dict], one: list[dict]) -> None:
    """Rank 0 of the DDP run takes the steps of the single process: as many, with the same
    gradients in the first epoch, and ends with the same losses, within rounding."""
    assert [len(e["grads"]) for e in ddp] == [len(e["grads"]) for e in one]
    assert ddp[0]["grads"][0] == pytest.approx(one[0]["grads"][0], rel=FIRST_STEP)
    assert ddp[0]["grads"] == pytest.approx(one[0]["grads"], rel=FIRST_EPOCH)
    assert [e["loss"] for e in ddp] == pytest.approx([e["loss"] for e in one], rel=LOSSES)


def check_one_set_of_files(out: Path, names: set[str]) -> None:
    assert {p.name for p in out.iterdir()} == names  # no temporary or per-rank files
    assert len(pd.read_csv(out / "log.csv")) == EPOCHS  # one row per epoch, not one per rank


@pytest.mark.slow
@pytest.mark.parametrize("model", ["real", "per-clip"])
def test_saliency_training_on_two_ranks(saliency_set, tmp_path, monkeypatch, model) -> None:
    options = ["--root", str(saliency_set), *SAL_OPTIONS]
    traces = torchrun("train_sal", tmp_path, ["--per-clip"] if model == "per-clip" else [],
                      [*options, "--out", str(tmp_path / "ddp"), "--batch-size", "1"])
    check_ranks_agree(traces, samples=5)
    check_one_set_of_files(tmp_path / "ddp", SAL_FILES)

    one = single_process(train_sal, [*options, "--out", str(tmp_path / "one"), "--batch-size",
                                     str(RANKS)], monkeypatch, model == "per-clip")
    ddp = epochs_of(traces[0])
    assert losses(tmp_path / "ddp") == [pytest.approx(e["loss"], rel=1e-5) for e in ddp]
    assert ddp[-1]["loss"] < ddp[0]["loss"] and one[-1]["loss"] < one[0]["loss"]
    if model == "per-clip":
        check_same_steps(ddp, one)
    else:  # each rank's BatchNorm sees one clip, the single process's two: near, not the same
        assert [e["loss"] for e in ddp] == pytest.approx([e["loss"] for e in one], rel=0.2)
        assert ddp[0]["grads"][0] != pytest.approx(one[0]["grads"][0], rel=FIRST_EPOCH)


@pytest.mark.slow
def test_quality_training_on_two_ranks(quality_set, tmp_path, monkeypatch) -> None:
    labels, frames, maps = quality_set
    options = ["--labels", str(labels), "--frames", str(frames), "--saliency", str(maps),
               *LSVQ_OPTIONS]
    traces = torchrun("train_lsvq", tmp_path, ["--per-clip"],
                      [*options, "--out", str(tmp_path / "ddp"), "--batch-size", "1"])
    check_ranks_agree(traces, samples=5)
    check_one_set_of_files(tmp_path / "ddp", LSVQ_FILES)

    one = single_process(train_lsvq, [*options, "--out", str(tmp_path / "one"), "--batch-size",
                                      str(RANKS)], monkeypatch, per_clip_model=True)
    ddp = epochs_of(traces[0])
    assert losses(tmp_path / "ddp") == [pytest.approx(e["loss"], rel=1e-5) for e in ddp]
    assert ddp[-1]["loss"] < ddp[0]["loss"]
    check_same_steps(ddp, one)
    # the gathered test predictions are those of every test video, once
    predictions = pd.read_csv(tmp_path / "ddp" / "predictions_test.csv")
    assert len(predictions) == predictions["video_id"].nunique() == 4
    reference = pd.read_csv(tmp_path / "one" / "predictions_test.csv")
    assert sorted(predictions["video_id"]) == sorted(reference["video_id"])


def test_sync_batchnorm_is_refused_on_the_cpu() -> None:
    """PyTorch's SyncBatchNorm fails at the first forward pass on a CPU tensor: say so at once."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
        wrap_for_training(model, Distributed(rank=0, world=2), torch.device("cpu"),
                          sync_batchnorm=True)
