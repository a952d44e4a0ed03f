"""Speed of DAGR-VQA scoring (README.md, "Speed"), measured in one run on one device:

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
  paper on this machine" (train_speed.py; on a CPU only a dry run of that table).

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

import argparse
import copy
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import evaluate_vqa
import extract_frame
import inference_sal
import train_lsvq
import train_sal
from dagr import gpu_check, paper
from dagr.cli import run_script, script_parser
from dagr.device import add_device_argument, pick_device
from dagr.files import atomic_path
from dagr.inference import frame_windows, inference_quality, predict_maps, prepare_inference
from dagr.precision import (PRECISIONS, compile_model, native_precisions, precision_autocast,
                            resolve_precision, weights_precision)
from dagr.scoring import decoded_videos, score_clips, score_items
from dagr.seeding import seed_everything
from dagr.training_speed import (TrainerDefaults, peak_memory_mib, progress, reproduce_columns,
                                 reproduce_table, reset_peak_memory, seconds_per_call,
                                 synchronize, training_rows)
from dagr.video_io import VideoReader, find_videos, sample_indices, sample_video
from sal_withreg import build_saliency_model
from VQA import BACKBONES, QualityNet

# ----------------------------------------------------------------------------- config
SALIENCY_WIDTH = 64         # UNet3D base width (64 = the full model; 16 makes a CPU run short)
REGISTERS = paper.REGISTERS
BACKBONE = paper.BACKBONE
SIZE = paper.FRAME_SIZE     # network input H, W
NUM_FRAMES = paper.FRAMES_PER_VIDEO  # frames per clip; also the original shape's saliency window
BATCH_SIZE = {"cuda": 8, "cpu": 2}   # clips per forward pass, per device type
WARMUP = {"cuda": 5, "cpu": 1}       # untimed calls before each measurement
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

Models = tuple[torch.nn.Module, QualityNet]  # (saliency network, quality network)
TRAINERS = TrainerDefaults(  # what the trainers' steps and the paper's work are made of
    train_sal.EPOCHS, train_sal.CLIPS_PER_VIDEO, train_sal.VAL_CLIPS, train_sal.CLIP_GRAD,
    (train_sal.L_KL, train_sal.L_CC, train_sal.L_NSS), train_lsvq.EPOCHS,
    train_lsvq.VAL_FRACTION, train_lsvq.CLIP_GRAD,
    (train_lsvq.PLCC_WEIGHT, train_lsvq.RANK_WEIGHT))


# ----------------------------------------------------------------------------- set-up

def describe_device(device: torch.device) -> dict[str, Any]:
    """Card or CPU name, threads, load and library versions, for the report."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file():
            models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")]
            name = models[0] if models else name
    return {"type": device.type, "name": name, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "opencv": cv2.__version__, "load_average_at_start": list(os.getloadavg())}


def generated_video(folder: Path, size: tuple[int, int] = GENERATED_SIZE,
                    frames: int = GENERATED_FRAMES, fps: float = GENERATED_FPS) -> Path:
    """An MP4 (OpenCV's MPEG-4 Part 2 encoder) of `frames` frames of `size` (H, W): a moving
    colour gradient with a bright square crossing it, so that frames differ."""
    path = folder / "generated.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write an MP4 file here")
    rows, columns = np.mgrid[0:size[0], 0:size[1]]
    side = max(size[0] // 5, 1)
    for t in range(frames):
        frame = np.stack([(columns + 4 * t) % 256, (rows + 2 * t) % 256,
                          np.full(size, 8 * t % 256)], axis=-1).astype(np.uint8)
        left = (t * 7) % max(size[1] - side, 1)
        frame[size[0] // 3:size[0] // 3 + side, left:left + side] = 255
        writer.write(frame)
    writer.release()
    return path


def plain_models(args: argparse.Namespace, device: torch.device) -> Models:
    """The networks as training leaves them (fp32, BatchNorm not folded), random weights."""
    seed_everything(SEED)
    saliency = build_saliency_model(args.saliency_width, args.registers).eval().to(device)
    quality = QualityNet(args.backbone, weights=None).eval().to(device)
    return saliency, quality


def fast_models(plain: Models, device: torch.device, precision: str, compiled: bool) -> Models:
    """The fast path's inference copies (as evaluate_vqa.score_videos prepares them)."""
    saliency, quality = plain
    return (compile_model(prepare_inference(saliency, device, precision), compiled),
            inference_quality(copy.deepcopy(quality), device, precision, compiled))


def parameters_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def gflop_per_clip(args: argparse.Namespace) -> dict[str, float]:
    """GFLOP (a multiply-add counts 2) of each network on one clip, counted on the meta device
    (nothing is computed, so full width costs nothing here)."""
    height, width = args.size
    with torch.device("meta"):
        saliency = build_saliency_model(args.saliency_width, args.registers).eval()
        quality = QualityNet(args.backbone, weights=None).eval()
        clip = torch.empty(1, NUM_FRAMES, 3, height, width)
        maps = torch.empty(1, NUM_FRAMES, 1, height, width)
    counts = {}
    for name, forward in (("saliency", lambda: saliency(clip.permute(0, 2, 1, 3, 4))),
                          ("quality", lambda: quality(clip, maps))):
        with FlopCounterMode(display=False) as counter:
            forward()
        counts[name] = counter.get_total_flops() / 1e9
    return counts


# ----------------------------------------------------------------------------- measuring











def model_rows(args: argparse.Namespace, device: torch.device, plain: Models,
               flops: dict[str, float], variants: dict[tuple[str, bool], Models]) -> list[dict]:
    """Throughput of the scoring model and of each network alone, per (precision, compiled)."""
    batch, (height, width) = args.batch_size, args.size
    frames = torch.randint(0, 256, (batch, NUM_FRAMES, height, width, 3), dtype=torch.uint8,
                           device=device)
    clips = frames.permute(0, 1, 4, 2, 3).float() / 255
    maps = torch.rand(batch, NUM_FRAMES, 1, height, width, device=device)
    params = {"saliency": parameters_m(plain[0]), "quality": parameters_m(plain[1])}
    rows = []
    for (precision, compiled), (saliency, quality) in variants.items():
        def quality_alone() -> torch.Tensor:
            with torch.inference_mode(), precision_autocast(device, precision):
                return quality(clips, maps)

        steps = {"scoring model": lambda: score_clips(quality, saliency, frames, device),
                 "saliency": lambda: predict_maps(saliency, clips, device, on_device=True),
                 "quality": quality_alone}
        for part, step in steps.items():
            reset_peak_memory(device)
            seconds = seconds_per_call(step, device, args.warmup, args.repeats, args.seconds)
            progress(f"model only: {part}, {precision}{' compiled' if compiled else ''}: "
                     f"{batch / seconds:.3g} clips/s")
            names = ("saliency", "quality") if part == "scoring model" else (part,)
            rows.append({"part": part, "precision": precision, "compiled": compiled,
                         "batch": batch, "params_m": sum(params[n] for n in names),
                         "gflop_per_clip": sum(flops[n] for n in names),
                         "clips_per_s": batch / seconds,
                         "frames_per_s": batch * NUM_FRAMES / seconds,
                         "peak_memory_mib": peak_memory_mib(device)})
    return rows






def decode_pass(items) -> dict[str, float]:
    """Decode every video of `items` and nothing else: the end-to-end ceiling."""
    start, videos, frames = time.perf_counter(), 0, 0
    for item in items:
        videos += item["frames"] is not None
        frames += item["decoded"]
    return rate(videos, frames, time.perf_counter() - start)


def end_to_end_pass(items, models: Models, batch_size: int, device: torch.device
                    ) -> dict[str, float]:
    """Score every video of `items` with the fast path (scoring.score_items)."""
    saliency, quality = models
    start, videos, frames = time.perf_counter(), 0, 0
    for item in score_items(quality, saliency, items, batch_size, device):
        videos += item["score"] is not None
        frames += item["decoded"]
    return rate(videos, frames, time.perf_counter() - start)


def rate(videos: int, frames: int, seconds: float) -> dict[str, float]:
    return {"videos": videos, "seconds": seconds, "videos_per_s": videos / seconds,
            "source_frames_per_s": frames / seconds}


def fast_one_video(path: Path, models: Models, args: argparse.Namespace,
                   device: torch.device) -> dict[str, float]:
    """Seconds per stage for one video on the fast path, in this process: decode (only the K
    sampled frames converted and resized), saliency of those K, quality."""
    saliency, quality = models
    start = time.perf_counter()
    frames = torch.from_numpy(sample_video(path, NUM_FRAMES, tuple(args.size)).frames)
    decoded = time.perf_counter()
    clips = frames[None].to(device).permute(0, 1, 4, 2, 3).float().div_(255)
    maps = predict_maps(saliency, clips, device, on_device=True)[:, :, None].float().div_(255)
    synchronize(device)
    mapped = time.perf_counter()
    with torch.inference_mode(), precision_autocast(device, weights_precision(quality)):
        quality(clips, maps)
    synchronize(device)
    return stages(start, decoded, mapped, time.perf_counter())


def original_one_video(path: Path, plain: Models, args: argparse.Namespace,
                       device: torch.device) -> dict[str, float]:
    """Seconds per stage for one video in the original pipeline's shape: every frame decoded
    and resized, saliency for every frame in windows of WINDOW (one window per forward pass,
    fp32, BatchNorm not folded), then the quality network on the K sampled frames."""
    saliency, quality = plain
    height, width = args.size
    start = time.perf_counter()
    with VideoReader(path) as video:
        frames = list(video.arrays((height, width)))
    decoded = time.perf_counter()
    maps, windows = [], 0
    for window, fresh in frame_windows(frames, NUM_FRAMES):
        clip = torch.from_numpy(np.stack(window))[None].permute(0, 1, 4, 2, 3).float() / 255
        window_maps = predict_maps(saliency, clip, device)[0]
        maps += [window_maps[t] for t in fresh]
        windows += 1
    mapped = time.perf_counter()
    indices = sample_indices(len(frames), NUM_FRAMES)
    clip = torch.from_numpy(np.stack([frames[i] for i in indices]))[None]
    clip = clip.to(device).permute(0, 1, 4, 2, 3).float() / 255
    sampled_maps = torch.stack([maps[i] for i in indices])[None, :, None].to(device).float() / 255
    with torch.inference_mode():
        quality(clip, sampled_maps)
    synchronize(device)
    return {**stages(start, decoded, mapped, time.perf_counter()), "frames": len(frames),
            "windows": windows}


def stages(start: float, decoded: float, mapped: float, end: float) -> dict[str, float]:
    return {"decode_s": decoded - start, "saliency_s": mapped - decoded,
            "quality_s": end - mapped, "total_s": end - start}


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
        "backbone": args.backbone, "size": list(args.size), "frames_per_clip": NUM_FRAMES,
        "batch_size": args.batch_size, "warmup": args.warmup, "repeats": args.repeats,
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
            report["training"] = training_rows(args, device, list(variants), NUM_FRAMES,
                                               TRAINERS)
        report.update(video_measurements(args, device, plain, variants, videos))
    if args.train:
        report["time_to_reproduce"] = reproduce_columns(report, TRAINERS)
    report["device"]["load_average_at_end"] = list(os.getloadavg())
    return report


def input_videos(args: argparse.Namespace, scratch: Path) -> tuple[list[Path], dict]:
    """The video files to score (a generated one without --videos) and their description."""
    if args.videos:
        paths = [path for _, path in find_videos(args.videos)]
        if not paths:
            raise FileNotFoundError(f"no video file found in {args.videos}")
        return paths, {"videos": [str(p) for p in paths], "generated": False}
    path = generated_video(scratch, tuple(args.generated_size), args.generated_frames)
    height, width = args.generated_size
    return [path], {"videos": [str(path)], "generated": True,
                    "description": f"generated: {args.generated_frames} frames of {width}x{height} "
                                   f"at {GENERATED_FPS:g} fps, moving shapes, MPEG-4 Part 2 (mp4v)"}


def video_measurements(args: argparse.Namespace, device: torch.device, plain: Models,
                       variants: dict[tuple[str, bool], Models], videos: list[Path]
                       ) -> dict[str, Any]:
    """Decode-only ceiling, end to end and one-video stages per precision (compiled with
    --compile), original shape, speed-ups. The models have run on full batches already
    (`model_rows`); the decoding processes are started once and serve every pass."""
    repeats = args.video_repeats or math.ceil(MIN_VIDEOS_PER_WORKER * max(args.workers, 1)
                                              / len(videos))
    items = decoded_videos(videos * repeats, tuple(args.size), args.workers, NUM_FRAMES,
                           persistent=True)
    # a first pass starts the processes, so the passes below are timed warm
    out: dict[str, Any] = {"cold_decode_pass_s": decode_pass(items)["seconds"]}
    out["decode_only"] = {"workers": args.workers, "files": len(videos), "repeats": repeats,
                          **decode_pass(items)}
    progress(f"decode only: {videos_rate(out['decode_only'])}")
    out["end_to_end"], out["fast_one_video"] = [], []
    for precision in args.precisions:
        models = variants[precision, args.compile]
        fast_one_video(videos[0], models, args, device)  # warm-up for a batch of one
        reset_peak_memory(device)
        e2e = end_to_end_pass(items, models, args.batch_size, device)
        e2e["fraction_of_decode_ceiling"] = (e2e["videos_per_s"]
                                             / out["decode_only"]["videos_per_s"])
        out["end_to_end"].append({"precision": precision, "compiled": args.compile,
                                  "batch": args.batch_size, **e2e,
                                  "peak_memory_mib": peak_memory_mib(device)})
        progress(f"end to end, {precision}: {videos_rate(e2e)}")
        out["fast_one_video"].append({"precision": precision, "compiled": args.compile,
                                      **fast_one_video(videos[0], models, args, device)})
        progress(f"one video, fast path, {precision}: {stage_seconds(out['fast_one_video'][-1])}")
    out["original_shape"] = {"video": str(videos[0]), "precision": "fp32",
                             **original_one_video(videos[0], plain, args, device)}
    progress(f"one video, original shape: {stage_seconds(out['original_shape'])}")
    original = out["original_shape"]["total_s"]
    out["speedup"] = [{"precision": e2e["precision"],
                       "end_to_end": original * e2e["videos_per_s"],
                       "one_video": original / one["total_s"]}
                      for e2e, one in zip(out["end_to_end"], out["fast_one_video"])]
    return out


# ----------------------------------------------------------------------------- the table

def performance_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table in the form of the paper's "System Performance" table."""
    device, settings = report["device"], report["settings"]
    rows = []
    for row in report["model_only"]:
        label = f"Model only: {row['part']}" + (" (compiled)" if row["compiled"] else "")
        rows.append([label, row["precision"], row["batch"], f"{row['params_m']:.1f}",
                     f"{row['gflop_per_clip']:.4g}",
                     f"{row['clips_per_s']:.3g} clips/s = {row['frames_per_s']:.3g} frames/s",
                     f"{row['peak_memory_mib']:.0f}"])
    for row in report.get("training", []):
        label = f"Training: {row['part']}" + (" (compiled)" if row["compiled"] else "")
        rows.append([label, row["precision"], row["batch"], "-", "-",
                     f"{row['clips_per_s']:.3g} clips/s", f"{row['peak_memory_mib']:.0f}"])
    decode = report["decode_only"]
    rows.append([f"Decode only (ceiling), {decode['workers']} workers", "-", "-", "-", "-",
                 videos_rate(decode), "-"])
    for e2e in report["end_to_end"]:
        rows.append(["End to end (fast path)", e2e["precision"], e2e["batch"], "-", "-",
                     f"{videos_rate(e2e)} ({100 * e2e['fraction_of_decode_ceiling']:.0f} % of "
                     "the ceiling)", f"{e2e['peak_memory_mib']:.0f}"])
    for one in report["fast_one_video"]:
        rows.append(["One video, fast path: decode + saliency + quality", one["precision"], 1,
                     "-", "-", stage_seconds(one), "-"])
    original = report["original_shape"]
    rows.append([f"One video, original shape ({original['windows']} saliency windows)", "fp32",
                 1, "-", "-", stage_seconds(original), "-"])
    for speedup in report["speedup"]:
        rows.append(["Speed-up over the original shape", speedup["precision"], "-", "-", "-",
                     f"{speedup['end_to_end']:.1f}x end to end, {speedup['one_video']:.1f}x "
                     "one video", "-"])
    memory = "peak GPU MiB" if device["type"] == "cuda" else "peak RSS MiB"
    header = ["Measure", "Precision", "Batch", "Params (M)", "GFLOP/clip", "Throughput", memory]
    lines = [f"System Performance: {device['name']} ({device['type']}, {device['torch_threads']} "
             f"threads), torch {device['torch']}; saliency UNet3D width "
             f"{settings['saliency_width']} + {settings['registers']} registers, quality "
             f"{settings['backbone']}; {settings['frames_per_clip']}-frame clips at "
             f"{settings['size'][0]}x{settings['size'][1]}; load average "
             f"{device['load_average_at_start'][0]:.1f} at start, "
             f"{device['load_average_at_end'][0]:.1f} at end",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    if "time_to_reproduce" in report:
        lines += ["", reproduce_table(report)]
    return "\n".join(lines)




def videos_rate(measured: dict[str, float]) -> str:
    return (f"{measured['videos_per_s']:.3g} videos/s = "
            f"{measured['source_frames_per_s']:.4g} source frames/s")


def stage_seconds(measured: dict[str, float]) -> str:
    return (f"{measured['decode_s']:.2f} + {measured['saliency_s']:.2f} + "
            f"{measured['quality_s']:.2f} = {measured['total_s']:.2f} s")


# ----------------------------------------------------------------------------- command line

def per_device(values: dict[str, int]) -> str:
    """A per-device-type default as help text: "8 on cuda, 2 on cpu"."""
    return ", ".join(f"{value} on {kind}" for kind, value in values.items())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--videos", nargs="+", metavar="INPUT",
                        help="video files or folders (default: a generated clip)")
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
    parser.add_argument("--warmup", type=int, help=f"untimed calls (default: {per_device(WARMUP)})")
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
    args.warmup = WARMUP.get(kind, 1) if args.warmup is None else args.warmup
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
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    print(f"\nreport written to {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main)
