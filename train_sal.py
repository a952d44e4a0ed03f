"""Stage 2: train and validate the saliency network on DHF1K or DIEM (README.md, stage 2).

    python train_sal.py --dataset dhf1k --root DHF1K/ --out runs/sal --epochs 20
    python train_sal.py --dataset dhf1k --root DHF1K/ --out runs/sal --epochs 20 --resume
    python train_sal.py --evaluate runs/sal/best.pt --dataset dhf1k --root DHF1K/ --split val
    torchrun --standalone --nproc-per-node 4 train_sal.py --dataset dhf1k --root DHF1K/ \\
        --out runs/sal --sync-bn

Splits: DHF1K trains on videos 1-600 and validates on 601-700; DIEM trains on its train fold
and validates on its test fold. Each training step sees clips of `--clip-len` consecutive
annotated frames with their maps; `--clips-per-video` clips per video and epoch, their starts
and order drawn from the seed and the epoch number (so a resumed run sees the same data).

Loss (`saliency_loss`), per frame over its pixels: l_kl * KL(G || P) - l_cc * CC(P, G)
- l_nss * NSS(P, F), with P the softmax of the logits over the frame's pixels, G the
ground-truth map normalised to sum 1 and F the fixations; the mean over frames.

Validation, every epoch: `--val-clips` clips spread evenly over each validation video, scored
on the softmax maps P (`probability_maps`, the distribution the loss fits) with the metrics of
metrics.py: per frame, pooled over each video's frames, then the plain mean over videos
(every video contributes the same number of frames, so this is also the mean over frames).
s-AUC takes its negatives from the fixations of other frames of the same video. The maps that
inference_sal.py stores are a monotone, near-linear function of P (see
sal_withreg.predict_maps), so these numbers describe them too.

Writes to --out: `best.pt` (highest validation CC), `last.pt` (every epoch; --resume continues
from it exactly, with the schedule set by --epochs), `log.csv` (one row per epoch; `best` marks
the epochs that improved) and `curves.png` (its curves, redrawn every epoch). Checkpoints
hold `kind="saliency"`, the model's settings, and what it was trained on (provenance.py).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from itertools import groupby
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import figures
from dataloader import PROBLEMS, SaliencyClipDataset, SaliencyVideo, read_saliency_set
from metrics import saliency_metrics
from model_file import checkpoint_network
from precision import (add_precision_arguments, bf16_backward_guard, compile_model,
                       precision_autocast, resolve_precision)
from provenance import TRAINED_ON, trained_on
from runtime import (add_device_argument, available_cores, pick_device, quiet_worker,
                     resume_checkpoint, run_script, save_epoch_checkpoints, script_parser,
                     seed_everything, slim_checkpoints, unwrap, writable_folder)
from sal_withreg import REGISTER_MODES, build_saliency_model
from training import (CsvLog, Distributed, ShardSampler, batches_per_epoch, close_distributed,
                      gather_objects, init_distributed, join_context, restore_training,
                      sync_optimizer, training_payload, warmup_cosine, wrap_for_training)

# ----------------------------------------------------------------------------- config
DATASET = "dhf1k"         # dhf1k or diem
ROOT = "data/DHF1K"       # the dataset in its publisher's layout
OUT = "runs/saliency"
REGISTERS = 4             # 0: the UNet3D baseline
REGISTER_MODE = "attention"
CHANNELS = 64             # U-Net base width
SIZE = (224, 398)         # frame height, width
EPOCHS = 20
CLIP_LEN = 8              # frames per clip
CLIPS_PER_VIDEO = 4       # training clips per video and epoch
VAL_CLIPS = 2             # validation clips per video, spread evenly over it
BATCH_SIZE = 4            # clips per step (per process under torchrun)
LR = 1e-4
WEIGHT_DECAY = 0.01       # on weight matrices and kernels only, not on biases and norms
WARMUP = 100              # optimizer steps of linear warm-up before the cosine decay
GRAD_ACCUM = 1            # batches per optimizer step
CLIP_GRAD = 1.0           # maximum gradient norm; 0 turns clipping off
L_KL, L_CC, L_NSS = 1.0, 1.0, 0.0
WORKERS = min(4, available_cores())  # data-loading processes (no more than the cores)
SEED = 0
SPLIT = "val"             # split that --evaluate scores: val, train or test
# -----------------------------------------------------------------------------

BEST, LAST, LOG = "best.pt", "last.pt", "log.csv"
METRICS = ("cc", "nss", "sim", "kld", "auc_j", "s_auc")
LOG_FIELDS = ["epoch", "train_loss", "lr", *(f"val_{m}" for m in METRICS), "seconds", "best"]
CURVE_PANELS = [("training loss", ["train_loss"]),
                ("validation CC, SIM, AUC-J, s-AUC", ["val_cc", "val_sim", "val_auc_j", "val_s_auc"]),
                ("validation NSS", ["val_nss"]), ("validation KLD", ["val_kld"])]
CURVES_TITLE = "saliency training; best epoch: highest validation CC"
KIND = "saliency"
UNIT_EPS = 1e-12  # keeps the variance terms of unit-mean maps (values near 1) off zero


# ----------------------------------------------------------------------------- loss

def probability_maps(logits: torch.Tensor) -> torch.Tensor:
    """Per-frame probability maps: softmax of the logits over each frame's pixels.

    logits (B, 1, T, H, W) -> (B, T, H, W) float32, every (H, W) frame summing to 1.
    """
    frames = logits[:, 0].float()
    return torch.softmax(frames.flatten(-2), dim=-1).view_as(frames)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correlation over the last dim of unit-mean maps (..., N) -> (...)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    # clamp inside the root keeps the gradient finite for a constant map
    return (a * b).sum(-1) * ((a * a).sum(-1) * (b * b).sum(-1)).clamp_min(UNIT_EPS).rsqrt()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


def saliency_loss(logits: torch.Tensor, maps: torch.Tensor, fixations: torch.Tensor | None = None,
                  l_kl: float = L_KL, l_cc: float = L_CC, l_nss: float = L_NSS) -> torch.Tensor:
    """l_kl * KL(G || P) - l_cc * CC(P, G) - l_nss * NSS(P, F), per frame, mean over frames.

    logits, maps, fixations: (..., H, W) with the same leading dims, e.g. (B, 1, T, H, W);
    every (H, W) slice is one frame. P = softmax of the frame's logits over its pixels,
    G = the frame's map normalised to sum 1, F = its fixations (> 0). Frames whose map is all
    zero carry no gaze and are left out of KL and CC; frames without fixations out of NSS.
    Computed in fp32 whatever the logits' dtype. Returns a scalar.
    """
    log_p = torch.log_softmax(logits.float().flatten(-2), dim=-1)  # (..., N)
    pixels = log_p.shape[-1]
    gt = maps.float().flatten(-2)
    mass = gt.sum(-1, keepdim=True)
    has_gaze = mass[..., 0] > 0
    g = gt / mass.clamp_min(torch.finfo(gt.dtype).tiny)
    kl = (torch.xlogy(g, g) - g * log_p).sum(-1)
    # CC and NSS are scale-free: unit-mean maps (x N) keep their sums far from fp32 underflow
    p = log_p.exp() * pixels
    loss = _masked_mean(l_kl * kl - l_cc * _pearson(p, g * pixels), has_gaze)
    if l_nss:
        if fixations is None:
            raise ValueError("an NSS term (l_nss != 0) needs the fixations")
        fixated = fixations.flatten(-2) > 0
        z = (p - p.mean(-1, keepdim=True)) * (p.var(-1, keepdim=True) + UNIT_EPS).rsqrt()
        nss = (z * fixated).sum(-1) / fixated.sum(-1).clamp_min(1)
        loss = loss - l_nss * _masked_mean(nss, fixated.any(-1))
    return loss


# ----------------------------------------------------------------------------- data

def validation_split(dataset: str) -> str:
    """Name of the split validated on: DHF1K's 'val' (601-700), DIEM's 'test' fold."""
    return "test" if dataset == "diem" else "val"


def split_videos(dataset: str, root: str | Path, split: str) -> list[SaliencyVideo]:
    """The annotated videos of `split` ('train', 'val' or 'test'; DIEM's 'val' is its test
    fold). Raises ValueError when there are none."""
    name = validation_split(dataset) if split == "val" else split
    videos = [v for v in read_saliency_set(dataset, root) if v.split == name]
    if not videos:
        raise ValueError(f"{root}: no annotated {dataset} videos in split {name!r}")
    return videos


def evaluation_clips(videos: Sequence[SaliencyVideo], clip_len: int, size: Sequence[int],
                     clips: int) -> SaliencyClipDataset:
    """`clips` clips per video at evenly spread starts: the same every time."""
    return SaliencyClipDataset(videos, clip_len, tuple(size), clips_per_video=clips, starts="even")


# ----------------------------------------------------------------------------- validation

def _nanmean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


ClipPrediction = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]


def _clip_predictions(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                      progress: bool, precision: str) -> Iterator[ClipPrediction]:
    """(video_id, P (T, H, W), G (T, H, W), F (T, H, W)) per clip, in the loader's order;
    the network runs at `precision`, P is computed in fp32."""
    with torch.inference_mode(), precision_autocast(device, precision):
        for batch in tqdm(loader, desc="validate", unit="batch", leave=False, disable=not progress):
            maps = probability_maps(model(batch["frames"].to(device))).cpu()
            for i, video_id in enumerate(batch["video_id"]):
                yield video_id, maps[i], batch["maps"][i, 0], batch["fixations"][i, 0]


def validate(model: torch.nn.Module, data: SaliencyClipDataset, device: torch.device,
             dist: Distributed = Distributed(), batch_size: int = BATCH_SIZE,
             workers: int = 0, progress: bool = True,
             precision: str | None = None) -> dict[str, float]:
    """Saliency metrics of `model`'s softmax maps P on the clips of `data` (an evaluation
    SaliencyClipDataset), pooled per video then averaged over videos. Under torchrun each process scores a share of
    the videos and all get the same result. The network runs at `precision` (default: the
    device's, precision.default_precision); the metrics are computed in fp32."""
    precision = resolve_precision(precision, device)
    shard = ShardSampler(len(data.videos), dist, shuffle=False).indices()
    clips = [v * data.clips_per_video + c for v in shard for c in range(data.clips_per_video)]
    loader = DataLoader(Subset(data, clips), batch_size, num_workers=workers,
                        worker_init_fn=quiet_worker)
    model.eval()
    scores = []
    for _, clips_of_video in groupby(_clip_predictions(model, loader, device, progress, precision),
                                     key=lambda item: item[0]):
        pred, gt, fixations = (torch.cat(parts) for parts in zip(*(c[1:] for c in clips_of_video)))
        scores.append(saliency_metrics(pred, gt, fixations))
    scores = [s for part in gather_objects(scores, dist) for s in part]
    return {name: _nanmean([s[name] for s in scores]) for name in METRICS}


def evaluate(checkpoint: str | Path, dataset: str, root: str | Path, split: str = SPLIT,
             device: str | torch.device | None = None, batch_size: int | None = None,
             workers: int = 0, progress: bool = True,
             precision: str | None = None) -> dict[str, float]:
    """Metrics of a train_sal.py checkpoint on a split, with the clips its training validated
    on (frame size, clip length and clips per video from the checkpoint's settings), the
    network at `precision` (default: the device's).
    Returns {cc, nss, sim, kld, auc_j, s_auc}."""
    device = pick_device(device)
    model, payload = checkpoint_network(checkpoint, KIND)
    model = model.to(device)
    settings = payload.get("settings") or {}
    if not {"clip_len", "size", "val_clips", "batch_size"} <= settings.keys():
        raise ValueError(f"{checkpoint}: not a train_sal.py checkpoint (no training settings)")
    data = evaluation_clips(split_videos(dataset, root, split), settings["clip_len"],
                            settings["size"], settings["val_clips"])
    return validate(model, data, device, batch_size=batch_size or settings["batch_size"],
                    workers=workers, progress=progress, precision=precision)


def format_table(metrics: dict[str, float]) -> str:
    """A one-row Markdown table of the saliency metrics."""
    header = "| " + " | ".join(METRICS) + " |"
    rule = "|" + "---|" * len(METRICS)
    row = "| " + " | ".join(f"{metrics[m]:.4f}" for m in METRICS) + " |"
    return "\n".join([header, rule, row])


# ----------------------------------------------------------------------------- training

def model_arguments(config: Any) -> dict[str, Any]:
    """Constructor arguments of the saliency network (stored in checkpoints)."""
    return {"channels": config.channels, "registers": config.registers,
            "register_mode": config.register_mode}


def make_optimizer(model: torch.nn.Module, config: Any) -> torch.optim.AdamW:
    """AdamW with weight decay on kernels and weight matrices only (nanoGPT's split)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def training_model(config: Any, device: torch.device) -> torch.nn.Module:
    """The fresh network on `device`, channels_last_3d on CUDA (the layout cuDNN's fast 3D
    kernels want; on the CPU it pays only for inference, see sal_withreg.prepare_inference),
    torch.compile'd with --compile. Validation and checkpoints use the plain model inside
    (runtime.unwrap), so checkpoints load into an uncompiled network."""
    model = build_saliency_model(**model_arguments(config)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    return compile_model(model, config.compile)


def train_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, config: Any,
                device: torch.device, dist: Distributed, progress: bool) -> float:
    """One pass over the loader, one optimizer step per `grad_accum` batches (the epoch's last
    step takes what is left). Returns the mean loss per clip over all processes (the same
    number however the clips are split into batches and processes)."""
    model.train()
    total, count, batches = 0.0, 0, len(loader)
    precision = resolve_precision(config.precision, device)
    with join_context(model):
        for i, batch in enumerate(tqdm(loader, desc="train", unit="batch", leave=False,
                                       disable=not progress)):
            group = min(config.grad_accum, batches - i // config.grad_accum * config.grad_accum)
            with precision_autocast(device, precision):
                logits = model(batch["frames"].to(device))
            # in fp32 whatever the forward's precision (saliency_loss casts the logits)
            loss = saliency_loss(logits, batch["maps"].to(device), batch["fixations"].to(device),
                                 config.l_kl, config.l_cc, config.l_nss)
            with bf16_backward_guard(device, precision):
                (loss / group).backward()
            if (i + 1) % config.grad_accum == 0 or i + 1 == batches:
                if config.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            clips = len(batch["frames"])
            total, count = total + loss.item() * clips, count + clips
    sums = gather_objects((total, count), dist)
    return sum(s for s, _ in sums) / max(sum(c for _, c in sums), 1)


def settings_of(config: Any) -> dict[str, Any]:
    """The run's options as plain JSON values, for the checkpoint."""
    plain = {}
    for key, value in vars(config).items():
        plain[key] = list(value) if isinstance(value, tuple) else \
            str(value) if isinstance(value, Path) else value
    return plain


def train(config: Any) -> Path:
    """Train with the options of `config` (the Namespace of `parse_args`, or any object with
    the same attributes); returns the path of the best checkpoint. Under torchrun only rank 0
    writes files."""
    dist, device = init_distributed(pick_device(config.device))
    try:
        best = _train(config, dist, device)
        gather_objects(None, dist)  # the ranks leave together, once rank 0 has written its files
        return best
    finally:
        close_distributed()


def _train(config: Any, dist: Distributed, device: torch.device) -> Path:
    out, size = Path(config.out), tuple(config.size)
    if dist.is_main:
        writable_folder(out)
    train_videos = split_videos(config.dataset, config.root, "train")
    val_data = evaluation_clips(split_videos(config.dataset, config.root, "val"),
                                config.clip_len, size, config.val_clips)
    seed_everything(config.seed)
    config.precision = resolve_precision(config.precision, device)
    model = wrap_for_training(training_model(config, device), dist, device, config.sync_bn)
    optimizer = make_optimizer(model, config)
    train_data = SaliencyClipDataset(train_videos, config.clip_len, size, config.clips_per_video,
                                     starts="random", seed=config.seed)
    sampler = ShardSampler(len(train_data), dist, shuffle=True, seed=config.seed)
    loader = DataLoader(train_data, config.batch_size, sampler=sampler, num_workers=config.workers,
                        pin_memory=device.type == "cuda", worker_init_fn=quiet_worker)
    steps = config.epochs * math.ceil(batches_per_epoch(loader, dist) / config.grad_accum)
    scheduler = warmup_cosine(optimizer, config.warmup, steps)
    start, best_cc = 0, None
    payload = resume_checkpoint(out / LAST, KIND) if config.resume else None
    if payload is not None:
        start = restore_training(payload, model, optimizer, scheduler, out / LAST)
        best_cc = payload["best_cc"]
    main_process = dist.is_main
    log = CsvLog(out / LOG, LOG_FIELDS)
    if main_process:
        log.resume_at(start + 1)  # rows are numbered by finished epochs
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{len(train_videos)} training / {len(val_data.videos)} validation videos, "
              f"{params:.2f} M parameters, epochs {start + 1}-{config.epochs} on {device}")
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        train_data.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loss = train_epoch(model, loader, optimizer, scheduler, config, device, dist, main_process)
        sync_optimizer(optimizer, scheduler, dist)
        metrics = validate(unwrap(model), val_data, device, dist, config.batch_size,
                           config.workers, main_process, config.precision)
        score = metrics["cc"] if math.isfinite(metrics["cc"]) else -math.inf
        improved = best_cc is None or score > best_cc
        best_cc = score if improved else best_cc
        if main_process:
            payload = training_payload(model, model_arguments(config), optimizer, scheduler,
                                       epoch + 1, metrics, settings_of(config), kind=KIND,
                                       best_cc=best_cc,
                                       **{TRAINED_ON: trained_on(config.dataset, len(train_videos),
                                                                 config.root)})
            # the log first: a crash before the checkpoints are saved resumes from the
            # previous last, which drops this epoch's row and redoes the epoch
            log.append({"epoch": epoch + 1, "train_loss": loss,
                        "lr": optimizer.param_groups[0]["lr"],
                        **{f"val_{m}": metrics[m] for m in METRICS},
                        "seconds": time.perf_counter() - began, "best": int(improved)})
            save_epoch_checkpoints(out / BEST, out / LAST, payload, improved)
            figures.write_curves(out / LOG, CURVE_PANELS, CURVES_TITLE)
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: loss {loss:.4f}, val "
                       + ", ".join(f"{m} {metrics[m]:.4f}" for m in METRICS)
                       + (" (best)" if improved else ""))
    if main_process and config.slim_checkpoints:
        slim_checkpoints(out / BEST, out / LAST)
    return out / BEST


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--dataset", choices=("dhf1k", "diem"), default=DATASET,
                        help="saliency dataset: DHF1K or DIEM (layouts: README.md)")
    parser.add_argument("--root", default=ROOT, help="dataset folder in its official layout")
    parser.add_argument("--out", default=OUT, help="folder for checkpoints and the log")
    parser.add_argument("--registers", type=int, default=REGISTERS,
                        help="register tokens (0: the baseline)")
    parser.add_argument("--register-mode", choices=REGISTER_MODES, default=REGISTER_MODE,
                        help="how the registers meet the features: attention at the bottleneck, or input channels")
    parser.add_argument("--channels", type=int, default=CHANNELS, help="U-Net base width")
    parser.add_argument("--size", type=int, nargs=2, default=SIZE, metavar=("H", "W"),
                        help="frame height and width of the network input")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs")
    parser.add_argument("--clip-len", type=int, default=CLIP_LEN, help="frames per training clip")
    parser.add_argument("--clips-per-video", type=int, default=CLIPS_PER_VIDEO,
                        help="training clips per video and epoch")
    parser.add_argument("--val-clips", type=int, default=VAL_CLIPS,
                        help="validation clips per video, evenly spread")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="clips per batch (per process under torchrun)")
    parser.add_argument("--lr", type=float, default=LR, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY,
                        help="AdamW weight decay (kernels and weight matrices only)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="warm-up optimizer steps")
    parser.add_argument("--grad-accum", type=int, default=GRAD_ACCUM, help="batches per step")
    parser.add_argument("--clip-grad", type=float, default=CLIP_GRAD,
                        help="maximum gradient norm (0: off)")
    parser.add_argument("--l-kl", type=float, default=L_KL, help="weight of KL(G || P)")
    parser.add_argument("--l-cc", type=float, default=L_CC, help="weight of CC(P, G)")
    parser.add_argument("--l-nss", type=float, default=L_NSS, help="weight of NSS(P, fixations)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="data-loading processes")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed of the initialisation, the clip starts and the data order")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun on GPUs: BatchNorm statistics over all ranks' batches")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue from <out>/{LAST} (from the start if there is none yet)")
    parser.add_argument("--slim-checkpoints", action="store_true",
                        help=f"when training ends, remove {LAST} and strip {BEST} of the "
                             "optimizer, schedule and random states (the run can then not be "
                             "--resume'd)")
    parser.add_argument("--evaluate", metavar="CHECKPOINT",
                        help="print the metrics of CHECKPOINT on --split instead of training")
    parser.add_argument("--split", choices=("val", "train", "test"), default=SPLIT,
                        help="split scored by --evaluate")
    add_precision_arguments(parser, "the network for training")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.grad_accum < 1 or args.batch_size < 1 or args.epochs < 1:
        parser.error("--grad-accum, --batch-size and --epochs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: done with every video; 1: done, but some videos were left out (the
    warnings say which); 2: an error stopped the run."""
    config = parse_args(argv)
    problems = len(PROBLEMS)
    try:
        if config.evaluate:
            metrics = evaluate(config.evaluate, config.dataset, config.root, config.split,
                               config.device, config.batch_size, config.workers,
                               precision=config.precision)
            print(f"{config.evaluate} on {config.dataset} {config.split}:")
            print(format_table(metrics))
        else:
            print(f"best checkpoint: {train(config)}")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if len(PROBLEMS) > problems else 0


if __name__ == "__main__":
    run_script(main)
