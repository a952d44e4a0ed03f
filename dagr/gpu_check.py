"""Every GPU path once, on generated data, with a PASS or FAIL line each (docs/precision.md,
"The GPU check"):

    python benchmark.py --device cuda --check     # one GPU, under 8 minutes
    python benchmark.py --device cpu --check      # the same at a tiny size (the test suite runs it)

The paths run the stage scripts' own `main(argv)`, which benchmark.py hands in (`Stages`): the
package imports no script.

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

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from dagr import demo_data
from dagr.checkpoints import checkpoint_network, load_checkpoint
from dagr.model_file import load_saliency
from dagr.inference import prepare_inference
from dagr.losses import probability_maps
from dagr.precision import COMPILE_BACKEND_VARIABLE, weights_autocast
from dagr.training import BEST, LAST, LOG
from dataloader import load_stored_clip, stored_videos

ROOT = Path(__file__).resolve().parents[1]  # where the stage scripts are
Stages = Mapping[str, Callable[[Sequence[str]], int]]  # script name -> its main(argv)

# ----------------------------------------------------------------------------- config
MAP_TOLERANCE = 0.05      # bf16 maps: total variation distance to the fp32 maps (0 to 1)
SCORE_TOLERANCE = 0.05    # bf16 compiled scores: |score - fp32 eager score| <= this x MOS range
RESUME_TOLERANCE = {"cpu": 0.0, "cuda": 0.05}  # max |resumed - uninterrupted| / max |weight|
CPU_COMPILE_BACKEND = "aot_eager"
# -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckSize:
    """How big the check's data and models are."""
    frame_size: tuple[int, int]  # H, W of the generated clips and the networks' input
    radius: int                  # object radius in the generated scenes
    saliency_videos: tuple[int, int, int]  # training videos, validation videos, frames each
    saliency_width: int          # saliency U-Net base width
    epochs: int                  # of each training run
    clip_len: int                # saliency training clip length
    clips_per_video: int         # saliency training clips per video and epoch
    quality_clips: int           # clips of the generated quality set
    backbone: str
    batch_size: int
    bench: tuple[str, ...]       # benchmark.py options


SIZES = {
    "cpu": CheckSize((32, 56), 5, (4, 2, 8), 4, 2, 4, 1, 24, "resnet18", 2,
                     ("--saliency-width", "2", "--registers", "2", "--backbone", "resnet18",
                      "--size", "32", "56", "--batch-size", "2", "--warmup-calls", "0",
                      "--repeats", "1", "--workers", "0", "--generated-size", "48", "64",
                      "--generated-frames", "16", "--video-repeats", "1")),
    "cuda": CheckSize((112, 196), 14, (8, 4, 16), 16, 2, 8, 2, 48, "resnet18", 4,
                      ("--saliency-width", "16", "--seconds", "1", "--generated-frames", "48")),
}
QUALITY_FRAMES = 4  # frames per generated quality clip, all kept


class CheckFailed(Exception):
    """A path's result is not what it should be."""


# ----------------------------------------------------------------------------- the runs

class Check:
    """The check's working folder, size, device and stage scripts, and the runs' outputs."""

    def __init__(self, work: Path, device: torch.device, stages: Stages):
        self.work, self.device, self.stages = work, device, stages
        self.size = SIZES["cuda" if device.type == "cuda" else "cpu"]
        self.saliency_set = work / "data" / demo_data.SALIENCY_DIR
        self.quality_set = work / "data" / demo_data.QUALITY_DIR
        self.frames, self.maps = work / "frames", work / "maps"

    def run(self, script: str, argv: Sequence[str]) -> None:
        """`script`'s main(argv); CheckFailed unless it returns 0."""
        code = self.stages[script](list(argv))
        if code != 0:
            raise CheckFailed(f"{script}.py exit status {code}")

    def saliency_argv(self, out: str, *options: str) -> list[str]:
        size = self.size
        return ["--dataset", "dhf1k", "--root", str(self.saliency_set),
                "--out", str(self.work / out), "--registers", "2",
                "--saliency-width", str(size.saliency_width), "--size", *map(str, size.frame_size),
                "--epochs", str(size.epochs), "--clip-len", str(size.clip_len),
                "--clips-per-video", str(size.clips_per_video), "--val-clips", "2",
                "--batch-size", str(size.batch_size), "--lr", "3e-3", "--warmup", "1",
                "--workers", "0", "--device", str(self.device), "--precision", "bf16", *options]

    def quality_argv(self, out: str, *options: str) -> list[str]:
        size = self.size
        return ["--dataset", "konvid", "--labels", str(self.quality_set / demo_data.QUALITY_LABELS),
                "--frames", str(self.frames), "--saliency", str(self.maps),
                "--out", str(self.work / out), "--backbone", size.backbone,
                "--no-pretrained", "--size", *map(str, size.frame_size),
                "--epochs", str(size.epochs), "--batch-size", str(size.batch_size),
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
    for name in (BEST, LAST):
        loads_into_plain_model(out / name)
    return finite_losses(out / LOG, column)


def path_train_sal(check: Check, compiled: bool) -> str:
    out = "sal_compiled" if compiled else "sal"
    check.run("train_sal", check.saliency_argv(out, *["--compile"] * compiled))
    return trained(check.work / out)


def path_resume(check: Check) -> str:
    """A compiled run of one epoch, resumed to the full run's epochs: the same weights (the
    warm-up spans the first epoch, whose learning rates then do not depend on the epochs)."""
    epochs = check.size.epochs
    check.run("train_sal", check.saliency_argv("sal_resumed", "--compile", "--epochs", "1"))
    check.run("train_sal", check.saliency_argv("sal_resumed", "--compile", "--epochs",
                                               str(epochs), "--resume"))
    resumed = load_checkpoint(check.work / "sal_resumed" / LAST)["model_state"]
    whole = load_checkpoint(check.work / "sal_compiled" / LAST)["model_state"]
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
               "--nproc-per-node", "1", str(ROOT / "train_sal.py"), *argv]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckFailed(f"exit status {done.returncode}: {done.stderr.strip()[-600:]}")
    backend = "NCCL with --sync-bn" if sync else ("Gloo; --sync-bn skipped: PyTorch's "
                                                  "SyncBatchNorm runs on GPUs only")
    return f"{backend}; " + trained(check.work / "sal_torchrun")


def path_inference(check: Check) -> str:
    """inference_sal.py in bf16 over the stored frames; its maps near the fp32 ones."""
    checkpoint = check.work / "sal" / BEST
    check.run("inference_sal", ["--checkpoint", str(checkpoint), "--frames", str(check.frames),
                                "--out", str(check.maps), "--workers", "0",
                                "--device", str(check.device), "--precision", "bf16"])
    videos = stored_videos(check.frames)
    missing = [v for v in videos if not any((check.maps / v).glob("*.png"))]
    if missing:
        raise CheckFailed(f"no maps for {len(missing)} of {len(videos)} videos")
    network = load_saliency(checkpoint)[0]
    models = {p: prepare_inference(network, check.device, p) for p in ("fp32", "bf16")}
    size = check.size.frame_size
    clips = torch.stack([load_stored_clip(check.frames / v, size)[0] for v in videos[:4]])
    x = clips.to(check.device).permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
    maps = {}
    for precision, model in models.items():
        with torch.inference_mode(), weights_autocast(model, check.device):
            maps[precision] = probability_maps(model(x))  # (B, T, H, W), fp32
    gap = 0.5 * (maps["fp32"] - maps["bf16"]).abs().sum((-2, -1)).max().item()
    if gap > MAP_TOLERANCE:
        raise CheckFailed(f"bf16 maps are {gap:.3g} from fp32 in total variation")
    return (f"{len(videos)} videos mapped; bf16 probability maps within {gap:.3g} (total "
            "variation) of fp32")


def path_train_lsvq(check: Check, compiled: bool) -> str:
    out = "quality_compiled" if compiled else "quality"
    check.run("train_lsvq", check.quality_argv(out, *["--compile"] * compiled))
    if not (check.work / out / "results.md").is_file():
        raise CheckFailed("no results.md")
    return trained(check.work / out)


def path_scoring(check: Check) -> str:
    """evaluate_vqa.py scoring in bf16 with --compile, against fp32 eager scores."""
    videos = sorted((check.quality_set / demo_data.QUALITY_VIDEOS).glob("*.mp4"))[:6]
    scores = {}
    for name, options in (("fp32", ["--precision", "fp32"]),
                          ("bf16_compiled", ["--precision", "bf16", "--compile"])):
        out = check.work / f"scores_{name}.csv"
        check.run("evaluate_vqa", ["--checkpoint", str(check.work / "quality" / BEST),
                                   "--saliency-checkpoint", str(check.work / "sal" / BEST),
                                   "--videos", *map(str, videos), "--out", str(out),
                                   "--batch-size", str(check.size.batch_size), "--workers", "0",
                                   "--device", str(check.device), *options])
        scores[name] = pd.read_csv(out)
        if len(scores[name]) != len(videos):
            raise CheckFailed(f"{name}: {len(scores[name])} of {len(videos)} scored")
    gap = (scores["fp32"]["score"] - scores["bf16_compiled"]["score"]).abs().max()
    scale = load_checkpoint(check.work / "quality" / BEST)["mos_scale"]
    limit = SCORE_TOLERANCE * (scale["high"] - scale["low"])
    if not gap <= limit:
        raise CheckFailed(f"bf16 compiled scores differ from fp32 by {gap:.3g} MOS (> {limit:.3g})")
    return f"{len(videos)} videos; bf16 compiled within {gap:.3g} MOS of fp32 (limit {limit:.3g})"


def path_benchmark(check: Check) -> str:
    out = check.work / "benchmark.json"
    check.run("benchmark", ["--device", str(check.device), *check.size.bench, "--train",
                            "--precisions", "fp32", "bf16", "--out", str(out)])
    report = json.loads(out.read_text())
    rates = [row["clips_per_s"] for row in report["model_only"] + report["training"]]
    hours = [row["hours"] for column in report["time_to_reproduce"] for row in column["rows"]]
    if not all(math.isfinite(v) and v > 0 for v in rates + hours):
        raise CheckFailed(f"rates {rates}, hours {hours}")
    return f"{len(rates)} throughput rows, time to reproduce {hours[-1]:.3g} h (bf16)"


# ----------------------------------------------------------------------------- running

def prepare_data(check: Check) -> None:
    """Generated saliency and quality sets, and the quality clips' stored frames."""
    size = check.size
    train, val, frames = size.saliency_videos
    demo_data.write_saliency_set(check.saliency_set, train, val, frames, size.frame_size,
                                 radius=size.radius)
    demo_data.write_quality_set(check.quality_set, size.quality_clips, QUALITY_FRAMES,
                                size.frame_size, radius=size.radius)
    check.run("extract_frame", ["--dataset", "konvid",
                                "--labels", str(check.quality_set / demo_data.QUALITY_LABELS),
                                "--root", str(check.quality_set / demo_data.QUALITY_VIDEOS),
                                "--out", str(check.frames), "--num-frames", str(QUALITY_FRAMES),
                                "--size", *map(str, size.frame_size), "--workers", "0"])


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


def run_check(device: torch.device, work: Path, stages: Stages) -> dict[str, bool]:
    """Run every path in the folder `work` with the scripts' `stages`, print one PASS/FAIL
    line each; returns {path: passed}."""
    check = Check(work, device, stages)
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
