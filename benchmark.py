"""Speed of DAGR-VQA scoring (docs/speed.md), measured in one run on one device:

- model only: the full scoring model (saliency UNet3D with registers + ResNet-50 quality
  network, random weights) on 8-frame clips, in clips/s and frames/s, per precision, with the
  batch size, parameters, GFLOP per clip (torch.utils.flop_counter) and peak memory; each
  network alone too;
- decode only: the scoring path's decoder (worker processes, K frames kept and resized) over
  the video files: the ceiling for end-to-end scoring;
- end to end: the fast path of `evaluate_vqa.py --videos` (decode, sample, resize, saliency,
  quality) over the same files with the same worker processes, in videos/s and source frames/s;
- one video: the fast path in this process, stage by stage (decode, saliency, quality);
- the original pipeline's shape on the first file: every frame decoded and resized, saliency
  for every frame in 8-frame windows (one window per forward pass), fp32, the network as
  trained (BatchNorm not folded), then the quality network on the 8 sampled frames.

- with --train: training throughput of each network and the table "time to reproduce the
  paper on this machine" (dagr/training_speed.py; on a CPU only a dry run of that table).

It prints a table in the form of the paper's "System Performance" table and writes JSON. Each
measurement stops after --seconds or --repeats timed calls and prints a progress line on
stderr; only the precisions the device runs natively are measured unless --precisions asks.
`--check` runs dagr/gpu_check.py instead: every GPU path once, PASS or FAIL each.

    python benchmark.py --device cpu --saliency-width 16               # a generated clip
    python benchmark.py --device cpu --saliency-width 16 --videos my_clip.mp4
    python benchmark.py --device cuda --compile --videos my_clip.mp4 --out bench_cuda.json

Without --videos it scores a generated clip (moving shapes, OpenCV's MPEG-4 Part 2 encoder).
Peak memory is torch.cuda.max_memory_allocated on CUDA (per measurement) and the process's peak
resident set size on the CPU (since the start of the run, so it only grows).
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import copy
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

import evaluate_vqa
import extract_frame
import inference_sal
import train_lsvq
import train_sal
from dagr import gpu_check, paper
from dagr.cli import deprecated_alias, run_script, script_parser
from dagr.device import add_device_argument, pick_device
from dagr.files import atomic_path
from dagr.inference import inference_quality, prepare_inference
from dagr.precision import PRECISIONS, compile_model, native_precisions, resolve_precision
from dagr.seeding import seed_everything
from dagr.speed import (Models, describe_device, gflop_per_clip, generated_video, model_rows,
                        performance_table, video_measurements)
from dagr.training_speed import (TrainerDefaults, reproduce_columns, reproduce_table,
                                 training_rows)
from dagr.video_io import find_videos
from sal_withreg import build_saliency_model
from VQA import BACKBONES, QualityNet

# ----------------------------------------------------------------------------- config
SALIENCY_WIDTH = 64         # UNet3D base width (64 = the full model; 16 makes a CPU run short)
REGISTERS = paper.REGISTERS
BACKBONE = paper.BACKBONE
SIZE = paper.FRAME_SIZE     # network input H, W
BATCH_SIZE = {"cuda": 8, "cpu": 2}   # clips per forward pass, per device type
WARMUP_CALLS = {"cuda": 5, "cpu": 1}  # untimed calls before each measurement
REPEATS = {"cuda": 50, "cpu": 20}    # at most this many timed calls per measurement
SECONDS = {"cuda": 3.0, "cpu": 8.0}  # and timed calls stop once this much time has passed
WORKERS = os.cpu_count() or 1        # decoding processes
MIN_VIDEOS_PER_WORKER = 4   # end to end: the file list is repeated up to this many per worker
GENERATED_SIZE = (720, 1280)
GENERATED_FRAMES = 96
GENERATED_FPS = 24.0
OUT = "benchmark.json"
SEED = 0
# -----------------------------------------------------------------------------

TRAINERS = TrainerDefaults(  # what the trainers' steps and the paper's work are made of
    train_sal.EPOCHS, train_sal.CLIPS_PER_VIDEO, train_sal.VAL_CLIPS, train_sal.CLIP_GRAD,
    (train_sal.L_KL, train_sal.L_CC, train_sal.L_NSS), train_lsvq.EPOCHS,
    train_lsvq.VAL_FRACTION, train_lsvq.CLIP_GRAD,
    (train_lsvq.PLCC_WEIGHT, train_lsvq.RANK_WEIGHT))


# ----------------------------------------------------------------------------- set-up

def plain_models(args: argparse.Namespace, device: torch.device) -> Models:
    """The networks as training leaves them (fp32, BatchNorm not folded), random weights."""
    seed_everything(SEED)
    saliency = build_saliency_model(args.saliency_width, args.registers).eval().to(device)
    quality = QualityNet(args.backbone, weights=None).eval().to(device)
    return saliency, quality


def fast_models(plain: Models, device: torch.device, precision: str, compiled: bool) -> Models:
    """The fast path's inference copies (as dagr/scoring.py's load_scorer prepares them)."""
    saliency, quality = plain
    return (compile_model(prepare_inference(saliency, device, precision), compiled),
            inference_quality(copy.deepcopy(quality), device, precision, compiled))


# ----------------------------------------------------------------------------- the run

def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the module docstring; returns the JSON report."""
    device = pick_device(args.device)
    if args.precisions is None:
        args.precisions, skipped = native_precisions(device)
    else:
        args.precisions, skipped = [resolve_precision(p, device) for p in args.precisions], {}
    for precision, why in skipped.items():
        print(f"note: {precision} not measured: {why}", file=sys.stderr)
    report: dict[str, Any] = {"device": describe_device(device), "settings": {
        "saliency_width": args.saliency_width, "registers": args.registers,
        "backbone": args.backbone, "size": list(args.size),
        "frames_per_clip": paper.FRAMES_PER_VIDEO,
        "batch_size": args.batch_size, "warmup_calls": args.warmup_calls, "repeats": args.repeats,
        "workers": args.workers, "precisions": list(args.precisions), "compile": args.compile,
        "skipped_precisions": skipped, "seconds_per_measurement": args.seconds,
        "memory": "torch.cuda.max_memory_allocated" if device.type == "cuda"
                  else "process peak resident set size (ru_maxrss), cumulative"}}
    with tempfile.TemporaryDirectory(prefix="benchmark_") as scratch:
        videos, report["input"] = input_videos(args, Path(scratch))
        plain = plain_models(args, device)
        flops = gflop_per_clip(args)
        variants = {(precision, compiled): fast_models(plain, device, precision, compiled)
                    for precision in args.precisions
                    for compiled in ((False, True) if args.compile else (False,))}
        report["model_only"] = model_rows(args, device, plain, flops, variants)
        if args.train:
            report["training"] = training_rows(args, device, list(variants),
                                               paper.FRAMES_PER_VIDEO, TRAINERS)
        repeats = args.video_repeats or math.ceil(MIN_VIDEOS_PER_WORKER * max(args.workers, 1)
                                                  / len(videos))
        report.update(video_measurements(args, device, plain, variants, videos, repeats))
    if args.train:
        report["time_to_reproduce"] = reproduce_columns(report, TRAINERS)
    report["device"]["load_average_at_end"] = list(os.getloadavg())
    return report


def input_videos(args: argparse.Namespace, scratch: Path) -> tuple[list[Path], dict]:
    """The video files to score (a generated one without --videos) and their description."""
    if args.videos:
        paths = [path for _, path in find_videos(args.videos)]
        return paths, {"videos": [str(p) for p in paths], "generated": False}
    path = generated_video(scratch, tuple(args.generated_size), args.generated_frames,
                           GENERATED_FPS)
    height, width = args.generated_size
    return [path], {"videos": [str(path)], "generated": True,
                    "description": f"generated: {args.generated_frames} frames of {width}x{height} "
                                   f"at {GENERATED_FPS:g} fps, moving shapes, MPEG-4 Part 2 (mp4v)"}


# ----------------------------------------------------------------------------- command line

def per_device(values: dict[str, int]) -> str:
    """A per-device-type default as help text: "8 on cuda, 2 on cpu"."""
    return ", ".join(f"{value} on {kind}" for kind, value in values.items())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--videos", nargs="+", metavar="INPUT",
                        help="video files or folders (searched recursively; default: a generated clip)")
    parser.add_argument("--out", default=OUT, help=f"JSON report (default {OUT})")
    parser.add_argument("--saliency-width", type=int, default=SALIENCY_WIDTH,
                        help=f"UNet3D base width (default {SALIENCY_WIDTH}, the full model)")
    parser.add_argument("--registers", type=int, default=REGISTERS,
                        help="register tokens of the saliency network")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default=BACKBONE,
                        help="ResNet trunk of the quality network")
    parser.add_argument("--size", type=int, nargs=2, default=SIZE, metavar=("H", "W"),
                        help="network input height and width")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS,
                        help="precisions to measure (default: those the device runs natively: "
                             "both on CUDA; on a CPU bf16 only with AVX512-BF16 or AMX)")
    parser.add_argument("--train", action="store_true",
                        help="also measure training throughput and print the time-to-reproduce "
                             "table")
    parser.add_argument("--check", action="store_true",
                        help="instead of measuring, check every GPU path once on generated data "
                             "(dagr/gpu_check.py; tiny on the CPU)")
    parser.add_argument("--work", help="--check: folder for its data and runs (default: a "
                                       "temporary one, removed at the end)")
    parser.add_argument("--compile", action="store_true",
                        help="also measure torch.compile'd models; end to end uses them")
    parser.add_argument("--batch-size", type=int,
                        help=f"clips per forward pass (default: {per_device(BATCH_SIZE)})")
    # not --warmup: in the trainers that is the learning rate's warm-up
    deprecated_alias(parser, "--warmup", parser.add_argument(
        "--warmup-calls", type=int,
        help=f"untimed calls before each measurement (default: {per_device(WARMUP_CALLS)})"))
    parser.add_argument("--repeats", type=int,
                        help=f"at most this many timed calls (default: {per_device(REPEATS)})")
    parser.add_argument("--seconds", type=float,
                        help=f"timed calls stop after this many seconds (default: {per_device(SECONDS)})")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"decoding processes (default {WORKERS}: one per CPU)")
    parser.add_argument("--video-repeats", type=int,
                        help="times the file list is scored end to end (default: enough for "
                             f"{MIN_VIDEOS_PER_WORKER} videos per worker)")
    parser.add_argument("--generated-size", type=int, nargs=2, default=GENERATED_SIZE,
                        metavar=("H", "W"), help="size of the generated clip")
    parser.add_argument("--generated-frames", type=int, default=GENERATED_FRAMES,
                        help="frames of the generated clip")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    kind = torch.device(args.device).type
    args.batch_size = args.batch_size or BATCH_SIZE.get(kind, 1)
    args.warmup_calls = (WARMUP_CALLS.get(kind, 1) if args.warmup_calls is None
                         else args.warmup_calls)
    args.repeats = args.repeats or REPEATS.get(kind, 2)
    args.seconds = args.seconds or SECONDS.get(kind, 8.0)
    return args


def check(device: torch.device, work: str | None) -> int:
    """`--check`: dagr/gpu_check.py's paths, run through the stage scripts' main()."""
    stages = {"extract_frame": extract_frame.main, "train_sal": train_sal.main,
              "inference_sal": inference_sal.main, "train_lsvq": train_lsvq.main,
              "evaluate_vqa": evaluate_vqa.main, "benchmark": main}
    if work:
        results = gpu_check.run_check(device, Path(work), stages)
    else:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
            results = gpu_check.run_check(device, Path(folder), stages)
    return 0 if all(results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        return check(pick_device(args.device), args.work)
    try:
        report = run(args)
    except (FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(performance_table(report))
    if "time_to_reproduce" in report:
        print(f"\n{reproduce_table(report)}")
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    print(f"\nreport written to {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main)
