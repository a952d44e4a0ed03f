"""Measurements of benchmark.py: the scoring model's throughput per precision, the decoding
ceiling, end-to-end scoring, one video stage by stage, the original pipeline's shape, and the
table in the form of the paper's "System Performance" table (docs/speed.md).

Each measurement runs a step until a time budget or a number of calls is spent
(`seconds_per_call`) and prints one progress line on stderr. `args` is benchmark.py's
Namespace.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dagr import paper
from dagr.inference import frame_windows, predict_maps
from dagr.precision import precision_autocast, weights_precision
from dagr.scoring import decoded_videos, decoding_pool, score_clips, score_items
from dagr.supervised import Supervision
from dagr.video_io import VideoReader, sample_indices, sample_video
from sal_withreg import build_saliency_model
from VQA import QualityNet

FRAMES = paper.FRAMES_PER_VIDEO  # frames per clip; also the original shape's saliency window
Models = tuple[torch.nn.Module, QualityNet]  # (saliency network, quality network)


# ----------------------------------------------------------------------------- timing

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(step: Callable[[], Any], device: torch.device, warmup: int,
                     repeats: int, budget: float = math.inf) -> float:
    """Mean wall time of `step` after `warmup` untimed calls, over timed calls that stop after
    `repeats` or once `budget` seconds have passed, whichever comes first (at least one): a
    slow machine takes fewer samples instead of taking longer."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start, calls = time.perf_counter(), 0
    while calls < max(repeats, 1) and (calls == 0 or time.perf_counter() - start < budget):
        step()
        synchronize(device)
        calls += 1
    return (time.perf_counter() - start) / calls


def progress(text: str) -> None:
    """One line per measurement, as it finishes (stderr: stdout carries the table)."""
    print(f"  {text}", file=sys.stderr, flush=True)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


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


def generated_video(folder: Path, size: tuple[int, int], frames: int, fps: float) -> Path:
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


def parameters_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def gflop_per_clip(args: argparse.Namespace) -> dict[str, float]:
    """GFLOP (a multiply-add counts 2) of each network on one clip, counted on the meta device
    (nothing is computed, so full width costs nothing here)."""
    height, width = args.size
    with torch.device("meta"):
        saliency = build_saliency_model(args.saliency_width, args.registers).eval()
        quality = QualityNet(args.backbone, weights=None).eval()
        clip = torch.empty(1, FRAMES, 3, height, width)
        maps = torch.empty(1, FRAMES, 1, height, width)
    counts = {}
    for name, forward in (("saliency", lambda: saliency(clip.permute(0, 2, 1, 3, 4))),
                          ("quality", lambda: quality(clip, maps))):
        with FlopCounterMode(display=False) as counter:
            forward()
        counts[name] = counter.get_total_flops() / 1e9
    return counts


def model_rows(args: argparse.Namespace, device: torch.device, plain: Models,
               flops: dict[str, float], variants: dict[tuple[str, bool], Models]) -> list[dict]:
    """Throughput of the scoring model and of each network alone, per (precision, compiled)."""
    batch, (height, width) = args.batch_size, args.size
    frames = torch.randint(0, 256, (batch, FRAMES, height, width, 3), dtype=torch.uint8,
                           device=device)
    clips = frames.permute(0, 1, 4, 2, 3).float() / 255
    maps = torch.rand(batch, FRAMES, 1, height, width, device=device)
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
            seconds = seconds_per_call(step, device, args.warmup_calls, args.repeats, args.seconds)
            progress(f"model only: {part}, {precision}{' compiled' if compiled else ''}: "
                     f"{batch / seconds:.3g} clips/s")
            names = ("saliency", "quality") if part == "scoring model" else (part,)
            rows.append({"part": part, "precision": precision, "compiled": compiled,
                         "batch": batch, "params_m": sum(params[n] for n in names),
                         "gflop_per_clip": sum(flops[n] for n in names),
                         "clips_per_s": batch / seconds,
                         "frames_per_s": batch * FRAMES / seconds,
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
    frames = torch.from_numpy(sample_video(path, FRAMES, tuple(args.size)).frames)
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
    for window, fresh in frame_windows(frames, FRAMES):
        clip = torch.from_numpy(np.stack(window))[None].permute(0, 1, 4, 2, 3).float() / 255
        window_maps = predict_maps(saliency, clip, device)[0]
        maps += [window_maps[t] for t in fresh]
        windows += 1
    mapped = time.perf_counter()
    indices = sample_indices(len(frames), FRAMES)
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


def video_measurements(args: argparse.Namespace, device: torch.device, plain: Models,
                       variants: dict[tuple[str, bool], Models], videos: list[Path],
                       repeats: int) -> dict[str, Any]:
    """Decode-only ceiling, end to end and one-video stages per precision (compiled with
    --compile), original shape, speed-ups, over `repeats` passes of the file list. The models
    have run on full batches already (`model_rows`); the decoding processes are started once
    and serve every pass."""
    with decoding_pool(tuple(args.size), Supervision(args.workers), FRAMES) as pool:
        def items():  # one pass over the videos, by the pool's processes
            return decoded_videos(pool, videos * repeats)

        # a first pass starts the processes, so the passes below are timed warm
        out: dict[str, Any] = {"cold_decode_pass_s": decode_pass(items())["seconds"]}
        out["decode_only"] = {"workers": args.workers, "files": len(videos), "repeats": repeats,
                              **decode_pass(items())}
        progress(f"decode only: {videos_rate(out['decode_only'])}")
        out["end_to_end"], out["fast_one_video"] = [], []
        for precision in args.precisions:
            models = variants[precision, args.compile]
            fast_one_video(videos[0], models, args, device)  # warm-up for a batch of one
            reset_peak_memory(device)
            e2e = end_to_end_pass(items(), models, args.batch_size, device)
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
    return "\n".join(lines)


def videos_rate(measured: dict[str, float]) -> str:
    return (f"{measured['videos_per_s']:.3g} videos/s = "
            f"{measured['source_frames_per_s']:.4g} source frames/s")


def stage_seconds(measured: dict[str, float]) -> str:
    return (f"{measured['decode_s']:.2f} + {measured['saliency_s']:.2f} + "
            f"{measured['quality_s']:.2f} = {measured['total_s']:.2f} s")
