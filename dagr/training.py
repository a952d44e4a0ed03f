"""The one training loop of both trainers (train_sal.py, train_lsvq.py).

A trainer builds its network, data, optimizer and schedule, then hands them to `fit` as a
`TrainingRun` with its `Objective` (how a batch goes through the network and what it costs)
and its validation. `fit` does the rest the same way for both: resume from `last.pt`, the
epochs (gradient accumulation and clipping, precision, DDP under torchrun), validation after
each epoch, the log (`log.csv`, one row per finished epoch, numbered from 1), the best and the
last checkpoints, and the curves (`curves.png`). Under torchrun only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dagr import figures
from dagr.checkpoints import (resume_checkpoint, restore_training, save_epoch_checkpoints,
                              slim_checkpoints, training_payload, unwrap)
from dagr.cli import deprecated_alias
from dagr.device import add_device_argument
from dagr.distributed import (Distributed, batches_per_epoch, gather_objects, join_context,
                              sync_optimizer)
from dagr.files import atomic_path
from dagr.precision import add_precision_arguments, bf16_backward_guard, precision_autocast
from metrics import Metric

BEST, LAST, LOG = "best.pt", "last.pt", "log.csv"


@dataclass(frozen=True)
class Objective:
    """What a trainer optimises. `forward(model, batch, device)` runs a batch through the
    network (under the run's autocast) and returns its output, whose first axis is the batch;
    `loss(output, batch, device)` is the scalar to minimise, computed in fp32."""
    forward: Callable[[nn.Module, dict, torch.device], torch.Tensor]
    loss: Callable[[torch.Tensor, dict, torch.device], torch.Tensor]


@dataclass
class TrainingRun:
    """Everything `fit` needs. `model` is the network as trained (on its device, possibly
    compiled and DDP-wrapped); `validate(plain model)` returns the validation metrics, of
    which `best_metric` (higher is better) picks `best.pt` and `logged` (metrics.py's) go
    into the log, the epoch's line and the curves.
    `payload` is what the checkpoints hold besides the training state (the network's kind,
    its MOS scale, what it was trained on, ...); `about` is printed when training starts."""
    out: Path
    model: nn.Module
    model_kwargs: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    objective: Objective
    validate: Callable[[nn.Module], dict[str, float]]
    best_metric: str
    logged: Sequence[Metric]
    curves_title: str
    settings: dict[str, Any]
    payload: dict[str, Any]
    epochs: int
    device: torch.device
    precision: str
    dist: Distributed = field(default_factory=Distributed)
    grad_accum: int = 1
    clip_grad: float = 0.0
    backward_guard: bool = False  # bf16_backward_guard: networks with Conv3d
    resume: bool = False
    slim: bool = False
    about: str = ""


def fit(run: TrainingRun) -> Path:
    """Train `run` for its epochs (from `last.pt` with `resume`); returns the path of the
    best checkpoint. The ranks of a torchrun job return together, once rank 0 has written."""
    start, best_score, best_epoch = 0, None, None
    payload = resume_checkpoint(run.out / LAST, run.payload["kind"]) if run.resume else None
    if payload is not None:
        start = restore_training(payload, run.model, run.optimizer, run.scheduler, run.out / LAST)
        # checkpoints of saliency runs before the common loop named it best_cc
        best_score = payload.get("best_score", payload.get("best_cc"))
        best_epoch = payload.get("best_epoch")
    log = CsvLog(run.out / LOG, log_fields(run.logged))
    if run.dist.is_main:
        log.resume_at(start + 1)
        params = sum(p.numel() for p in run.model.parameters()) / 1e6
        print(f"{run.about}{', ' if run.about else ''}{params:.2f} M parameters, epochs "
              f"{start + 1}-{run.epochs} on {run.device}")
    for epoch in range(start + 1, run.epochs + 1):
        began = time.perf_counter()
        for part in (run.loader.sampler, run.loader.dataset):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch - 1)  # the data order of epoch e depends on seed and e
        loss = train_epoch(run, f"epoch {epoch}/{run.epochs}")
        sync_optimizer(run.optimizer, run.scheduler, run.dist)
        metrics = run.validate(unwrap(run.model))
        score = metrics[run.best_metric]
        score = score if math.isfinite(score) else -math.inf
        improved = best_score is None or score > best_score
        if improved:
            best_score, best_epoch = score, epoch
        if run.dist.is_main:
            _save_epoch(run, epoch, loss, metrics, improved, best_score, best_epoch, log,
                        time.perf_counter() - began)
    if run.dist.is_main and run.slim:
        slim_checkpoints(run.out / BEST, run.out / LAST)
    gather_objects(None, run.dist)  # the ranks leave together, once rank 0 has written
    return run.out / BEST


def log_fields(logged: Sequence[Metric]) -> list[str]:
    """The columns of log.csv for the validation metrics `logged`."""
    return ["epoch", "train_loss", "lr", *(f"val_{m.name}" for m in logged), "seconds", "best"]


def training_curves(logged: Sequence[Metric]) -> list[figures.Panel]:
    """The panels of curves.png: the training loss, then the `logged` metrics, those that
    share a panel (a scale) together, the panels in the order of their first metric."""
    panels: dict[str, list[str]] = {}
    for metric in logged:
        panels.setdefault(metric.curves_panel, []).append(f"val_{metric.name}")
    return [("training loss", ["train_loss"]),
            *((f"validation {title}", columns) for title, columns in panels.items())]


def _save_epoch(run: TrainingRun, epoch: int, loss: float, metrics: dict[str, float],
                improved: bool, best_score: float, best_epoch: int, log: "CsvLog",
                seconds: float) -> None:
    """Rank 0's end of an epoch: the log row, the checkpoints, the curves, one line."""
    payload = training_payload(run.model, run.model_kwargs, run.optimizer, run.scheduler, epoch,
                               metrics, run.settings, best_score=best_score,
                               best_epoch=best_epoch, **run.payload)
    # the log first: a crash before the checkpoints are saved resumes from the previous
    # last, which drops this epoch's row and redoes the epoch
    log.append({"epoch": epoch, "train_loss": loss, "lr": run.optimizer.param_groups[0]["lr"],
                **{f"val_{m.name}": metrics[m.name] for m in run.logged}, "seconds": seconds,
                "best": int(improved)})
    save_epoch_checkpoints(run.out / BEST, run.out / LAST, payload, improved)
    figures.write_curves(run.out / LOG, training_curves(run.logged), run.curves_title)
    tqdm.write(f"epoch {epoch}/{run.epochs}: loss {loss:.4f}, val "
               + ", ".join(f"{m.name} {metrics[m.name]:.4f}" for m in run.logged)
               + (" (best)" if improved else ""))


def train_epoch(run: TrainingRun, desc: str) -> float:
    """One pass over the loader, one optimizer step per `grad_accum` batches (the epoch's last
    step takes what is left). Returns the mean loss per clip over all processes (the same
    number however the clips are split into batches and processes)."""
    model, device = run.model, run.device
    model.train()
    total, count, batches = 0.0, 0, len(run.loader)
    with join_context(model):
        for i, batch in enumerate(tqdm(run.loader, desc=desc, unit="batch", leave=False,
                                       disable=not run.dist.is_main)):
            group = min(run.grad_accum, batches - i // run.grad_accum * run.grad_accum)
            with precision_autocast(device, run.precision):
                output = run.objective.forward(model, batch, device)
            loss = run.objective.loss(output, batch, device)
            guard = (bf16_backward_guard(device, run.precision) if run.backward_guard
                     else contextlib.nullcontext())
            with guard:
                (loss / group).backward()
            if (i + 1) % run.grad_accum == 0 or i + 1 == batches:
                if run.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), run.clip_grad)
                run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
                run.scheduler.step()
            total, count = total + loss.item() * len(output), count + len(output)
    sums = gather_objects((total, count), run.dist)
    return sum(s for s, _ in sums) / max(sum(c for _, c in sums), 1)


def add_run_arguments(parser: argparse.ArgumentParser, *, size: Sequence[int], epochs: int,
                      batch_size: int, lr: float, weight_decay: float, warmup: float, seed: int,
                      grad_accum: int, clip_grad: float, workers: int) -> None:
    """The options both trainers share, declared once so that each has the same name, meaning
    and help in both (docs/design.md, "Command lines"); the defaults are the trainer's
    constants of the same names."""
    parser.add_argument("--size", type=int, nargs=2, default=size, metavar=("H", "W"),
                        help="frame height and width of the network input")
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help="clips per batch (per process under torchrun)")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=weight_decay,
                        help="AdamW weight decay, on weight matrices and kernels only (not on "
                             "biases and norms)")
    parser.add_argument("--warmup", type=float, default=warmup,
                        help="epochs of linear learning-rate warm-up before the cosine decay (a "
                             "fraction is fine: it is rounded to whole optimizer steps)")
    parser.add_argument("--seed", type=int, default=seed,
                        help="seed of every random draw: the initialisation, the data order, "
                             "the split or the clip starts")
    parser.add_argument("--grad-accum", type=int, default=grad_accum, help="batches per step")
    deprecated_alias(parser, "--grad-clip", parser.add_argument(
        "--clip-grad", type=float, default=clip_grad, help="maximum gradient norm (0: no clipping)"))
    parser.add_argument("--workers", type=int, default=workers, help="data-loading processes")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun on GPUs: BatchNorm statistics over all ranks' batches")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue from <out>/{LAST} (from the start if there is none yet)")
    parser.add_argument("--slim-checkpoints", action="store_true",
                        help=f"when training ends, remove {LAST} and strip {BEST} of the "
                             "optimizer, schedule and random states (a third of its size; the "
                             "run can then not be --resume'd)")
    add_precision_arguments(parser, "the network for training")
    add_device_argument(parser)


def check_run_arguments(parser: argparse.ArgumentParser, config: argparse.Namespace) -> None:
    if config.grad_accum < 1 or config.batch_size < 1 or config.epochs < 1:
        parser.error("--grad-accum, --batch-size and --epochs must be at least 1")


def settings_of(config: Any) -> dict[str, Any]:
    """A run's options (an argparse Namespace) as plain JSON values, for its checkpoints."""
    def plain(value: Any) -> Any:
        return str(value) if isinstance(value, Path) else list(value) \
            if isinstance(value, tuple) else value
    return {key: plain(value) for key, value in vars(config).items()}


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Both trainers' AdamW: weight decay on the weight matrices and kernels (2 or more
    dimensions), none on biases and normalisation scales, whose decay only pulls the
    features' scale and offset towards zero (nanoGPT's split)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def training_schedule(optimizer: torch.optim.Optimizer, warmup: float, epochs: int,
                      loader: DataLoader, dist: Distributed, grad_accum: int
                      ) -> torch.optim.lr_scheduler.LambdaLR:
    """Both trainers' learning-rate schedule: `warmup_cosine` over `epochs`, the warm-up given
    in epochs (--warmup) and rounded to whole optimizer steps. An epoch is as many steps as
    `train_epoch` takes: one per `grad_accum` batches of the longest shard, rounded up."""
    steps = math.ceil(batches_per_epoch(loader, dist) / grad_accum)
    return warmup_cosine(optimizer, round(warmup * steps), epochs * steps)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class CsvLog:
    """One row per epoch in a CSV file that survives crashes: rows are flushed as written,
    and `resume_at(epoch)` drops rows written after the checkpoint a run resumes from."""

    def __init__(self, path: str | os.PathLike, fields: list[str]):
        self.path, self.fields = Path(path), fields

    def resume_at(self, epoch: int) -> None:
        """Keep only the rows of epochs before `epoch` (the next one to run)."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < epoch]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            handle.flush()
            os.fsync(handle.fileno())


