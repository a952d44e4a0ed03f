"""The training throughput of both networks and the time the paper's work would take at the
measured rates (benchmark.py --train; docs/speed.md).

A training step is what the trainers do per batch: the forward under the precision's autocast,
the loss in fp32 (dagr/losses.py), backward, gradient clipping at the trainers' default norm,
an AdamW step. The trainers' defaults (`TrainerDefaults`) come from train_sal.py and
train_lsvq.py through benchmark.py. Random inputs and weights: the speed
does not depend on them.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

import torch

from dagr.losses import quality_loss, saliency_loss
from dagr.precision import bf16_backward_guard, compile_model, precision_autocast
from dagr.speed import peak_memory_mib, progress, reset_peak_memory, seconds_per_call
from sal_withreg import build_saliency_model
from VQA import QualityNet

# ----------------------------------------------------------------------------- the paper's work
LSVQ_TRAIN = 28_056         # LSVQ training videos (is_test == False)
LSVQ_TEST = 7_400           # LSVQ test videos
LSVQ_TEST_1080P = 3_561     # LSVQ-1080p test videos
LSVQ_VIDEOS = LSVQ_TRAIN + LSVQ_TEST + LSVQ_TEST_1080P  # frames and maps are made for all
DHF1K_TRAIN = 600           # DHF1K training videos
DHF1K_VAL = 100             # DHF1K validation videos
# -----------------------------------------------------------------------------

Step = Callable[[], Any]


@dataclass(frozen=True)
class TrainerDefaults:
    """The trainers' settings that a training step and the paper's work depend on (the
    constants of train_sal.py and train_lsvq.py)."""
    saliency_epochs: int
    clips_per_video: int
    val_clips: int
    saliency_clip_grad: float
    saliency_loss: tuple[float, float, float]  # l_kl, l_cc, l_nss
    quality_epochs: int
    val_fraction: float
    quality_clip_grad: float
    quality_loss: tuple[float, float]          # plcc_weight, rank_weight


def saliency_step(model: torch.nn.Module, batch: int, frames: int, size: tuple[int, int],
                  device: torch.device, precision: str, trainers: TrainerDefaults) -> Step:
    """A train_sal.py step on random clips (B, 3, T, H, W) and maps (B, 1, T, H, W)."""
    clips = torch.rand(batch, 3, frames, *size, device=device)
    maps = torch.rand(batch, 1, frames, *size, device=device)
    return _step(model, lambda: saliency_loss(model(clips), maps, None, *trainers.saliency_loss),
                 device, precision, trainers.saliency_clip_grad)


def quality_step(model: torch.nn.Module, batch: int, frames: int, size: tuple[int, int],
                 device: torch.device, precision: str, trainers: TrainerDefaults) -> Step:
    """A train_lsvq.py step on random clips (B, T, 3, H, W), maps (B, T, 1, H, W), targets (B,)."""
    clips = torch.rand(batch, frames, 3, *size, device=device)
    maps = torch.rand(batch, frames, 1, *size, device=device)
    target = torch.rand(batch, device=device)
    return _step(model, lambda: quality_loss(model(clips, maps).float(), target,
                                             *trainers.quality_loss),
                 device, precision, trainers.quality_clip_grad)


def _step(model: torch.nn.Module, loss_of: Callable[[], torch.Tensor], device: torch.device,
          precision: str, clip: float) -> Step:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> float:
        with precision_autocast(device, precision):
            loss = loss_of()
        optimizer.zero_grad(set_to_none=True)
        with bf16_backward_guard(device, precision):
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss.detach()
    return step


def training_steps(saliency_width: int, registers: int, backbone: str, batch: int,
                   frames: int, size: tuple[int, int], device: torch.device, precision: str,
                   compiled: bool, trainers: TrainerDefaults) -> dict[str, Step]:
    """{"saliency": step, "quality": step}: fresh networks in train mode on `device`."""
    saliency = build_saliency_model(saliency_width, registers).to(device).train()
    quality = QualityNet(backbone, weights=None).to(device).train()
    if device.type == "cuda":  # as the trainers lay them out
        saliency = saliency.to(memory_format=torch.channels_last_3d)
        quality.to_channels_last()
    return {"saliency": saliency_step(compile_model(saliency, compiled), batch, frames, size,
                                      device, precision, trainers),
            "quality": quality_step(compile_model(quality, compiled), batch, frames, size,
                                    device, precision, trainers)}


# ----------------------------------------------------------------------------- time to reproduce

def reproduce_rows(train_rate: dict[str, float], inference_rate: dict[str, float],
                   decode_videos_per_s: float, trainers: TrainerDefaults) -> list[dict[str, Any]]:
    """The paper's work in hours at the measured rates: one row per stage, then the total.

    train_rate / inference_rate: clips/s of each network ("saliency", "quality") in training
    and in inference; decode_videos_per_s: videos/s of the frame sampler. Work sizes: the
    trainers' defaults (epochs, clips per video, validation share) on DHF1K and LSVQ; frames
    and saliency maps for every LSVQ video (one 8-frame clip each)."""
    sal_epochs, q_epochs = trainers.saliency_epochs, trainers.quality_epochs
    sal_train = DHF1K_TRAIN * trainers.clips_per_video * sal_epochs
    sal_val = DHF1K_VAL * trainers.val_clips * sal_epochs
    q_val_videos = round(trainers.val_fraction * LSVQ_TRAIN)
    q_train = (LSVQ_TRAIN - q_val_videos) * q_epochs
    q_eval = q_val_videos * q_epochs + LSVQ_TEST + LSVQ_TEST_1080P
    work = [
        ("Frame extraction (extract_frame.py)", f"{LSVQ_VIDEOS:,} LSVQ videos",
         LSVQ_VIDEOS / decode_videos_per_s),
        ("Saliency training (train_sal.py)",
         f"DHF1K {DHF1K_TRAIN} videos x {trainers.clips_per_video} clips x {sal_epochs} epochs "
         f"+ validation {DHF1K_VAL} x {trainers.val_clips} x {sal_epochs}",
         sal_train / train_rate["saliency"] + sal_val / inference_rate["saliency"]),
        ("Saliency maps (inference_sal.py)", f"{LSVQ_VIDEOS:,} LSVQ clips",
         LSVQ_VIDEOS / inference_rate["saliency"]),
        ("Quality training (train_lsvq.py)",
         f"LSVQ {LSVQ_TRAIN - q_val_videos:,} clips x {q_epochs} epochs + validation "
         f"{q_val_videos:,} x {q_epochs} + tests {LSVQ_TEST + LSVQ_TEST_1080P:,}",
         q_train / train_rate["quality"] + q_eval / inference_rate["quality"]),
    ]
    rows = [{"stage": stage, "work": size, "hours": seconds / 3600}
            for stage, size, seconds in work]
    rows.append({"stage": "Total", "work": "-", "hours": sum(r["hours"] for r in rows)})
    return rows


# ----------------------------------------------------------------------------- benchmark.py --train

def training_rows(args: argparse.Namespace, device: torch.device,
                  variants: list[tuple[str, bool]], frames: int,
                  trainers: TrainerDefaults) -> list[dict]:
    """Training throughput of each network on clips of `frames` frames per (precision,
    compiled), with benchmark.py's options `args`."""
    rows = []
    for precision, compiled in variants:
        steps = training_steps(args.saliency_width, args.registers, args.backbone,
                               args.batch_size, frames, tuple(args.size), device, precision,
                               compiled, trainers)
        for part, step in steps.items():
            reset_peak_memory(device)
            # a compiled step compiles in its first call, which must not be timed
            seconds = seconds_per_call(step, device, max(args.warmup_calls, int(compiled)),
                                       args.repeats, args.seconds)
            progress(f"training: {part}, {precision}{' compiled' if compiled else ''}: "
                     f"{args.batch_size / seconds:.3g} clips/s")
            rows.append({"part": part, "precision": precision, "compiled": compiled,
                         "batch": args.batch_size, "clips_per_s": args.batch_size / seconds,
                         "peak_memory_mib": peak_memory_mib(device)})
    return rows


def reproduce_columns(report: dict[str, Any], trainers: TrainerDefaults) -> list[dict[str, Any]]:
    """Time to reproduce the paper per measured (precision, compiled): train_speed's rows at
    this run's training, model-only inference and decode-only rates."""
    columns = []
    for precision, compiled in dict.fromkeys((r["precision"], r["compiled"])
                                             for r in report["training"]):
        def rates(rows: list[dict]) -> dict[str, float]:
            return {r["part"]: r["clips_per_s"] for r in rows
                    if (r["precision"], r["compiled"]) == (precision, compiled)}
        columns.append({"precision": precision, "compiled": compiled,
                        "rows": reproduce_rows(
                            rates(report["training"]), rates(report["model_only"]),
                            report["decode_only"]["videos_per_s"], trainers)})
    return columns


def reproduce_table(report: dict[str, Any]) -> str:
    """"Time to reproduce the paper on this machine": hours per stage and measured setting."""
    columns = report["time_to_reproduce"]
    header = ["Stage", "Work"] + [f"hours, {c['precision']}" + (" compiled" if c["compiled"]
                                                                 else "") for c in columns]
    lines = [f"Time to reproduce the paper on this machine ({report['device']['name']}), at the "
             "rates measured above"]
    if report["device"]["type"] == "cpu":
        lines.append("CPU figures are only a dry run of this table: the paper is reproduced on "
                     "GPUs (docs/speed.md).")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(columns[0]["rows"]):
        cells = [row["stage"], row["work"]] + [f"{c['rows'][i]['hours']:.3g}" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
