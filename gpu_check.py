"""Every GPU path once, on generated data, with a PASS or FAIL line each (README "Precision,
compile and the GPU check"):

    python benchmark.py --device cuda --check     # one GPU, under 8 minutes
    python benchmark.py --device cpu --check      # the same at a tiny size (the test suite runs it)

Paths, each checked: both trainers for a short run in bf16, eager and `--compile` (finite
losses, checkpoints written that load into a plain, uncompiled network); a compiled run
stopped after its first epoch and resumed (the same weights as the uninterrupted compiled run:
exactly on the CPU, within RESUME_TOLERANCE on CUDA, whose bf16 kernels are not bit-for-bit
repeatable); a one-process `torchrun` of train_sal.py (NCCL and `--sync-bn` on CUDA; Gloo
without `--sync-bn` on the CPU, where PyTorch's SyncBatchNorm does not run); saliency inference
(inference_sal.py in bf16: a map for every stored frame; the network's probability maps
within MAP_TOLERANCE, in total variation distance, of the fp32 ones: the stored maps are
min-max stretched, which magnifies rounding on a barely trained network's flat maps);
scoring with `--compile` in bf16 (evaluate_vqa.py: within SCORE_TOLERANCE of fp32 eager
scores); the benchmark table with --train. The exit status is 1 if any path fails.

On the CPU, `--compile` runs with the "aot_eager" backend (precision.compile_model): the same
graph capture and autograd tracing, without inductor's C++ code generation, which takes minutes
per network on a 2-core CPU. On CUDA it is inductor, as in real runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

import benchmark
import demo
import demo_data
import evaluate_vqa
import inference_sal
import train_lsvq
import train_sal
from dataloader import load_stored_clip, stored_videos
from precision import COMPILE_BACKEND_VARIABLE
from runtime import add_device_argument, load_checkpoint, pick_device
from model_file import checkpoint_network
from sal_withreg import weights_autocast

# ----------------------------------------------------------------------------- config
MAP_TOLERANCE = 0.05      # bf16 maps: total variation distance to the fp32 maps (0 to 1)
SCORE_TOLERANCE = 0.05    # bf16 compiled scores: |score - fp32 eager score| <= this x MOS range
RESUME_TOLERANCE = {"cpu": 0.0, "cuda": 0.05}  # max |resumed - uninterrupted| / max |weight|
CPU_COMPILE_BACKEND = "aot_eager"
# -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckSize:
    """How big the check's data and models are."""
    demo: demo.DemoSize      # the generated data and the saliency network's width
    clip_len: int            # saliency training clip length
    backbone: str
    batch_size: int
    bench: tuple[str, ...]   # benchmark.py options


SIZES = {
    "cpu": CheckSize(demo.SIZES["tiny"], 4, "resnet18", 2,
                     ("--saliency-width", "2", "--registers", "2", "--backbone", "resnet18",
                      "--size", "32", "56", "--batch-size", "2", "--warmup", "0",
                      "--repeats", "1", "--workers", "0", "--generated-size", "48", "64",
                      "--generated-frames", "16", "--video-repeats", "1")),
    "cuda": CheckSize(demo.DemoSize(frame_size=(112, 196), radius=14, saliency_train=8,
                                    saliency_val=4, saliency_frames=16, saliency_channels=16,
                                    saliency_epochs=2, saliency_clips=2, quality_clips=48,
                                    quality_epochs=2), 8, "resnet18", 4,
                      ("--saliency-width", "16", "--seconds", "1", "--generated-frames", "48")),
}


class CheckFailed(Exception):
    """A path's result is not what it should be."""


# ----------------------------------------------------------------------------- the runs

class Check:
    """The check's working folder, size and device, and the runs' outputs."""

    def __init__(self, work: Path, device: torch.device):
        self.work, self.device = work, device
        self.size = SIZES["cuda" if device.type == "cuda" else "cpu"]
        self.layout = demo.Layout(work)

    def saliency_argv(self, out: str, *options: str) -> list[str]:
        size = self.size.demo
        return ["--dataset", "dhf1k", "--root", str(self.layout.saliency_set),
                "--out", str(self.work / out), "--registers", "2",
                "--channels", str(size.saliency_channels), "--size", *map(str, size.frame_size),
                "--epochs", str(size.saliency_epochs), "--clip-len", str(self.size.clip_len),
                "--clips-per-video", str(size.saliency_clips), "--val-clips", "2",
                "--batch-size", str(self.size.batch_size), "--lr", "3e-3", "--warmup", "2",
                "--workers", "0", "--device", str(self.device), "--precision", "bf16", *options]

    def quality_argv(self, out: str, *options: str) -> list[str]:
        size = self.size.demo
        return ["--dataset", "konvid", "--labels", str(self.layout.labels),
                "--frames", str(self.layout.frames), "--saliency", str(self.layout.maps("check")),
                "--out", str(self.work / out), "--backbone", self.size.backbone,
                "--no-pretrained", "--size", *map(str, size.frame_size),
                "--epochs", str(size.quality_epochs), "--batch-size", str(self.size.batch_size),
                "--lr", "5e-4", "--warmup", "0.5", "--val-fraction", "0.2",
                "--test-fraction", "0.25", "--workers", "0", "--device", str(self.device),
                "--precision", "bf16", *options]


def finite_losses(log: Path, column: str = "train_loss") -> str:
    """Raises CheckFailed unless `log` (a trainer's log.csv) has rows and finite losses."""
    if not log.is_file():
        raise CheckFailed(f"{log} not written")
    losses = pd.read_csv(log)[column]
    if losses.empty or not all(math.isfinite(v) for v in losses):
        raise CheckFailed(f"{log}: losses {losses.tolist()}")
    return "losses " + ", ".join(f"{v:.3f}" for v in losses)


def loads_into_plain_model(checkpoint: Path) -> None:
    """Raises CheckFailed unless `checkpoint` loads (strictly) into a fresh uncompiled network."""
    # the state as saved: load_checkpoint would strip the prefixes this looks for
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if any(key.startswith(("_orig_mod.", "module.")) for key in saved["model_state"]):
        raise CheckFailed(f"{checkpoint}: wrapper prefixes in the saved state")
    try:
        checkpoint_network(checkpoint, saved["kind"])  # exact names and shapes
    except ValueError as err:
        raise CheckFailed(str(err)) from err


def trained(out: Path, column: str = "train_loss") -> str:
    """The checks of a finished training run in `out`."""
    for name in ("best.pt", "last.pt"):
        loads_into_plain_model(out / name)
    return finite_losses(out / "log.csv", column)


def path_train_sal(check: Check, compiled: bool) -> str:
    out = "sal_compiled" if compiled else "sal"
    train_sal.train(train_sal.parse_args(check.saliency_argv(out, *["--compile"] * compiled)))
    return trained(check.work / out)


def path_resume(check: Check) -> str:
    """A compiled run of one epoch, resumed to the full run's epochs: the same weights."""
    epochs = check.size.demo.saliency_epochs
    train_sal.train(train_sal.parse_args(check.saliency_argv("sal_resumed", "--compile",
                                                             "--epochs", "1")))
    train_sal.train(train_sal.parse_args(check.saliency_argv("sal_resumed", "--compile",
                                                             "--epochs", str(epochs), "--resume")))
    resumed = load_checkpoint(check.work / "sal_resumed" / "last.pt")["model_state"]
    whole = load_checkpoint(check.work / "sal_compiled" / "last.pt")["model_state"]
    scale = max(v.abs().max().item() for v in whole.values() if v.is_floating_point())
    gap = max((resumed[k].float() - v.float()).abs().max().item() for k, v in whole.items())
    tolerance = RESUME_TOLERANCE[check.device.type]
    if gap > tolerance * scale:
        raise CheckFailed(f"resumed weights differ by {gap:.3g} (largest weight {scale:.3g})")
    return f"weights differ by {gap:.3g} from the uninterrupted run (largest weight {scale:.3g})"


def path_torchrun(check: Check) -> str:
    """train_sal.py under a one-process torchrun (NCCL on CUDA, Gloo on the CPU)."""
    sync = ["--sync-bn"] if check.device.type == "cuda" else []
    argv = check.saliency_argv("sal_torchrun", "--epochs", "1", *sync)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "1", str(Path(train_sal.__file__)), *argv]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckFailed(f"exit status {done.returncode}: {done.stderr.strip()[-600:]}")
    backend = "NCCL with --sync-bn" if sync else ("Gloo; --sync-bn skipped: PyTorch's "
                                                  "SyncBatchNorm runs on GPUs only")
    return f"{backend}; " + trained(check.work / "sal_torchrun")


def path_inference(check: Check) -> str:
    """inference_sal.py in bf16 over the stored frames; its maps near the fp32 ones."""
    checkpoint = check.work / "sal" / train_sal.BEST
    maps = check.layout.maps("check")
    code = inference_sal.main(["--checkpoint", str(checkpoint), "--frames",
                               str(check.layout.frames), "--out", str(maps), "--workers", "0",
                               "--device", str(check.device), "--precision", "bf16"])
    if code != 0:
        raise CheckFailed(f"inference_sal.py exit status {code}")
    videos = stored_videos(check.layout.frames)
    missing = [v for v in videos if not any((maps / v).glob("*.png"))]
    if missing:
        raise CheckFailed(f"no maps for {len(missing)} of {len(videos)} videos")
    models = {p: inference_sal.load_saliency_model(checkpoint, check.device, precision=p)
              for p in ("fp32", "bf16")}
    size = check.size.demo.frame_size
    clips = torch.stack([load_stored_clip(check.layout.frames / v, size)[0] for v in videos[:4]])
    x = clips.to(check.device).permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
    maps = {}
    for precision, model in models.items():
        with torch.inference_mode(), weights_autocast(model, check.device):
            maps[precision] = train_sal.probability_maps(model(x))  # (B, T, H, W), fp32
    gap = 0.5 * (maps["fp32"] - maps["bf16"]).abs().sum((-2, -1)).max().item()
    if gap > MAP_TOLERANCE:
        raise CheckFailed(f"bf16 maps are {gap:.3g} from fp32 in total variation")
    return (f"{len(videos)} videos mapped; bf16 probability maps within {gap:.3g} (total "
            "variation) of fp32")


def path_train_lsvq(check: Check, compiled: bool) -> str:
    out = "quality_compiled" if compiled else "quality"
    train_lsvq.train(train_lsvq.parse_args(check.quality_argv(out, *["--compile"] * compiled)))
    if not (check.work / out / "results.md").is_file():
        raise CheckFailed("no results.md")
    return trained(check.work / out)


def path_scoring(check: Check) -> str:
    """evaluate_vqa.py scoring in bf16 with --compile, against fp32 eager scores."""
    videos = sorted((check.layout.quality_set / demo_data.QUALITY_VIDEOS).glob("*.mp4"))[:6]
    scores = {}
    for name, precision, compiled in (("fp32", "fp32", False), ("bf16_compiled", "bf16", True)):
        scores[name], failures = evaluate_vqa.score_videos(
            check.work / "quality" / "best.pt", videos, check.work / f"scores_{name}.csv",
            check.work / "sal" / train_sal.BEST, batch_size=check.size.batch_size, workers=0,
            device=check.device, progress=False, precision=precision, compiled=compiled)
        if failures or len(scores[name]) != len(videos):
            raise CheckFailed(f"{name}: {len(scores[name])} of {len(videos)} scored {failures}")
    gap = (scores["fp32"]["score"] - scores["bf16_compiled"]["score"]).abs().max()
    scale = load_checkpoint(check.work / "quality" / "best.pt")["mos_scale"]
    limit = SCORE_TOLERANCE * (scale["high"] - scale["low"])
    if not gap <= limit:
        raise CheckFailed(f"bf16 compiled scores differ from fp32 by {gap:.3g} MOS (> {limit:.3g})")
    return f"{len(videos)} videos; bf16 compiled within {gap:.3g} MOS of fp32 (limit {limit:.3g})"


def path_benchmark(check: Check) -> str:
    out = check.work / "benchmark.json"
    code = benchmark.main(["--device", str(check.device), *check.size.bench, "--train",
                           "--precisions", "fp32", "bf16", "--out", str(out)])
    if code != 0 or not out.is_file():
        raise CheckFailed(f"benchmark.py exit status {code}")
    report = json.loads(out.read_text())
    rates = [row["clips_per_s"] for row in report["model_only"] + report["training"]]
    hours = [row["hours"] for column in report["time_to_reproduce"] for row in column["rows"]]
    if not all(math.isfinite(v) and v > 0 for v in rates + hours):
        raise CheckFailed(f"rates {rates}, hours {hours}")
    return f"{len(rates)} throughput rows, time to reproduce {hours[-1]:.3g} h (bf16)"


# ----------------------------------------------------------------------------- running

def prepare_data(check: Check) -> None:
    """The demo's generated sets and the quality clips' stored frames."""
    demo.write_data(check.layout, check.size.demo, demo.SEED)
    demo.extract_frames(check.layout, check.size.demo, workers=0)


def paths(check: Check) -> list[tuple[str, Callable[[], str], tuple[str, ...]]]:
    """(name, run, names of the paths whose outputs it needs), in running order."""
    return [
        ("train_sal bf16", lambda: path_train_sal(check, False), ()),
        ("train_sal bf16 --compile", lambda: path_train_sal(check, True), ()),
        ("train_sal compiled resume", lambda: path_resume(check), ("train_sal bf16 --compile",)),
        ("torchrun train_sal", lambda: path_torchrun(check), ()),
        ("inference_sal bf16", lambda: path_inference(check), ("train_sal bf16",)),
        ("train_lsvq bf16", lambda: path_train_lsvq(check, False), ("inference_sal bf16",)),
        ("train_lsvq bf16 --compile", lambda: path_train_lsvq(check, True),
         ("inference_sal bf16",)),
        ("scoring bf16 --compile", lambda: path_scoring(check), ("train_lsvq bf16",)),
        ("benchmark table --train", lambda: path_benchmark(check), ()),
    ]


def run_check(device: torch.device, work: Path) -> dict[str, bool]:
    """Run every path, print one PASS/FAIL line each; returns {path: passed}."""
    check = Check(work, device)
    backend = os.environ.get(COMPILE_BACKEND_VARIABLE)
    if device.type == "cpu" and backend is None:
        os.environ[COMPILE_BACKEND_VARIABLE] = CPU_COMPILE_BACKEND
    try:
        return _run_paths(check)
    finally:
        if backend is None:
            os.environ.pop(COMPILE_BACKEND_VARIABLE, None)


def _run_paths(check: Check) -> dict[str, bool]:
    began = time.perf_counter()
    prepare_data(check)
    print(f"check on {check.device}: data generated in {time.perf_counter() - began:.0f} s",
          flush=True)
    results: dict[str, bool] = {}
    for name, run, needs in paths(check):
        start = time.perf_counter()
        if not all(results.get(need) for need in needs):
            detail, passed = f"not run: needs {', '.join(needs)}", False
        else:
            try:
                detail, passed = run(), True
            except (CheckFailed, Exception) as err:  # every failure is a FAIL line, not a stop
                detail, passed = f"{type(err).__name__}: {err}", False
        results[name] = passed
        print(f"{'PASS' if passed else 'FAIL'} {name} ({time.perf_counter() - start:.0f} s): "
              f"{detail}", flush=True)
    print(f"{sum(results.values())} of {len(results)} paths passed in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="folder for the generated data and runs (default: a "
                                       "temporary one, removed at the end)")
    add_device_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    if args.work:
        results = run_check(device, Path(args.work))
    else:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
            results = run_check(device, Path(work))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
