"""Stage 4: train the saliency-weighted quality network (README.md, stage 4).

    python train_lsvq.py --dataset lsvq --labels labels_train_test.csv \\
        --labels-1080p labels_test_1080p.csv --frames frames/ --saliency maps/ --out runs/lsvq
    python train_lsvq.py --dataset konvid --labels KoNViD_1k_mos.csv --frames frames/ \\
        --saliency-alpha 0 --out runs/konvid

Splits. LSVQ follows its official protocol: train on the `is_test == False` rows less a seeded
validation hold-out (--val-fraction, 5 %), test on the `is_test` rows and on the 1080p file
(--labels-1080p). Other sets are split at random (seeded): --test-fraction of the videos for
testing, --val-fraction of the rest for validation, the remainder for training. A validation
part holds at least MIN_VAL videos, so that its correlations are defined. A csv or labels-txt
file with a split column (--dataset csv, see the README) is split by that column. Every run
writes the split it used to `splits.csv` (video_id, split); `--splits FILE` makes a run use
exactly the splits of such a file.

Model choice uses the validation videos only: the epoch with the best mean of validation
SRCC and PLCC is kept as `best.pt`. The test videos are scored once, with that checkpoint,
after training.

Targets are MOS mapped to [0, 1] by the training split's min and max (`mos_scale` in the
checkpoint); predictions are reported in MOS units. Loss on a batch of B clips:
    L1(pred, target) + plcc_weight * (1 - PLCC(pred, target)) + rank_weight * ranking hinge,
both extra terms differentiable (the original "Spearman loss" had no gradient).

Writes into --out: `last.pt` and `best.pt` (self-describing, written atomically), `log.csv`
(one row per epoch), `curves.png` (the log's curves, redrawn every epoch), and for each test
set `predictions_<set>.csv` (video_id, mos, prediction, mapped) and `results.{md,csv,json}`.
`--resume` continues from `last.pt` with its optimizer, scheduler and RNG states (and redraws
curves.png from the log); the data order depends only on seed + epoch, so a resumed CPU run ends
with the same weights as an uninterrupted one.

Distributed: `torchrun --nproc_per_node N train_lsvq.py ...` trains each rank on its shard
(ShardSampler, DDP join for uneven shards), gathers losses and predictions on every rank, and
only rank 0 writes files. --batch-size is per rank; `--sync-bn` (GPUs only) computes BatchNorm
statistics over all ranks' clips.

Public API, also used by evaluate_vqa.py (the dependency runs one way, evaluate_vqa ->
train_lsvq; this file imports no other stage script): `parse_args`, `train`, `load_table`,
`split_table`, `random_split` (from labelled_sets.py), `clip_loader`, `predict`, `score_predictions`, `set_name`,
`results_table`, `write_results`, `write_predictions`, `quality_loss`.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import figures
from dataloader import PROBLEMS, MosScale, VQAClipDataset, read_labels
from labelled_sets import (PLAIN_FORMATS, SPLITS, add_label_arguments, given_split, label_columns,
                           random_split, read_splits, read_table, write_splits)
from metrics import logistic_map, vqa_metrics
from model_file import checkpoint_network
from precision import (add_precision_arguments, compile_model, precision_autocast,
                       resolve_precision)
from provenance import TRAINED_ON, trained_on
from runtime import (add_device_argument, atomic_path, available_cores, load_checkpoint,
                     pick_device, quiet_worker, resume_checkpoint, run_script,
                     save_epoch_checkpoints, script_parser, seed_everything, slim_checkpoints,
                     unwrap, writable_folder)
from training import (CsvLog, Distributed, ShardSampler, batches_per_epoch, close_distributed,
                      gather_objects, init_distributed, join_context, restore_training,
                      sync_optimizer, training_payload, warmup_cosine, wrap_for_training)
from VQA import BACKBONES, VARIANTS, QualityNet, build_quality_model

# ----------------------------------------------------------------------------- config
DATASET = "lsvq"          # lsvq | konvid | livevqc | youtube-ugc | csv | labels-txt
LABELS = None             # the dataset's official label file
LABELS_1080P = None       # LSVQ only: labels_test_1080p.csv, a second test set
FRAMES = "frames"         # extract_frame.py output
SALIENCY = "saliency"     # inference_sal.py output (unused when saliency_alpha is 0)
OUT = "runs/quality"
BACKBONE = "resnet50"
VARIANT = "fusion"        # fusion | spatial | temporal
SALIENCY_ALPHA = 0.5      # 0 switches saliency weighting off
WEIGHTS = "imagenet"      # backbone start: "imagenet", a torchvision state-dict file, or None
INIT = None               # fine-tune from this quality checkpoint (its architecture and weights)
SIZE = (224, 398)         # frame height, width
EPOCHS = 20
BATCH_SIZE = 8
LR = 1e-4
WEIGHT_DECAY = 0.05
WARMUP = 1.0              # epochs of linear warm-up before the cosine decay
PLCC_WEIGHT = 1.0         # weight of 1 - PLCC of the batch
RANK_WEIGHT = 0.3         # weight of the pairwise ranking hinge
GRAD_CLIP = 1.0           # max gradient norm; 0 = no clipping
VAL_FRACTION = 0.05
TEST_FRACTION = 0.2       # non-LSVQ sets only
WORKERS = min(4, available_cores())  # data-loading processes (no more than the cores)
SEED = 0
# -----------------------------------------------------------------------------

CORRELATION_EPS = 1e-8
DISPLAY_NAMES = {"lsvq": "LSVQ", "konvid": "KoNViD-1k", "livevqc": "LIVE-VQC",
                 "youtube-ugc": "YouTube-UGC", "csv": "Labelled set",
                 "labels-txt": "Labelled set"}
RESULT_COLUMNS = ["Dataset", "PLCC", "SRCC", "KRCC", "RMSE", "PLCC (logistic)", "n"]
METRIC_OF_COLUMN = {"PLCC": "plcc", "SRCC": "srcc", "KRCC": "krcc", "RMSE": "rmse",
                    "PLCC (logistic)": "plcc_logistic", "n": "n"}
LOG_FIELDS = ["epoch", "lr", "train_loss", "val_plcc", "val_srcc", "val_krcc", "val_rmse",
              "val_score", "best"]
CURVE_PANELS = [("training loss", ["train_loss"]),
                ("validation correlations and score", ["val_plcc", "val_srcc", "val_krcc", "val_score"]),
                ("validation RMSE (MOS units)", ["val_rmse"])]
CURVES_TITLE = "quality training; best epoch: highest validation score = (SRCC + PLCC) / 2"


# ----------------------------------------------------------------------------- loss

def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of a batch: pred, target (B,) -> scalar. Zero for B < 2.
    The epsilon sits inside the square root, so constant predictions still get a finite
    gradient."""
    if pred.numel() < 2:
        return pred.new_zeros(())
    p, t = pred - pred.mean(), target - target.mean()
    return 1.0 - (p * t).sum() / torch.sqrt((p * p).sum() * (t * t).sum() + CORRELATION_EPS)


def rank_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pairwise ranking hinge: the mean over pairs with target_i > target_j of
    relu(pred_j - pred_i). pred, target (B,) -> scalar; zero when no pair is ordered."""
    ordered = (target[:, None] - target[None, :]) > 0  # (B, B)
    if not ordered.any():
        return pred.new_zeros(())
    return torch.relu(pred[None, :] - pred[:, None])[ordered].mean()


def quality_loss(pred: torch.Tensor, target: torch.Tensor, plcc_weight: float = PLCC_WEIGHT,
                 rank_weight: float = RANK_WEIGHT) -> torch.Tensor:
    """L1 + plcc_weight * (1 - PLCC) + rank_weight * ranking hinge; pred, target (B,)."""
    loss = torch.nn.functional.l1_loss(pred, target)
    if plcc_weight:
        loss = loss + plcc_weight * plcc_loss(pred, target)
    if rank_weight:
        loss = loss + rank_weight * rank_loss(pred, target)
    return loss


# ----------------------------------------------------------------------------- data

def load_table(config: argparse.Namespace) -> pd.DataFrame:
    """`video_id, path, mos, split` of --labels, plus the LSVQ 1080p file when given."""
    table = read_table(config.dataset, config.labels, columns=label_columns(config))
    if config.labels_1080p:
        if config.dataset != "lsvq":
            raise ValueError("--labels-1080p belongs to LSVQ; drop it or use --dataset lsvq")
        table = pd.concat([table, read_labels("lsvq", config.labels_1080p)], ignore_index=True)
    return table


def split_table(table: pd.DataFrame, dataset: str, val_fraction: float = VAL_FRACTION,
                test_fraction: float = TEST_FRACTION, seed: int = SEED) -> dict[str, pd.DataFrame]:
    """{"train", "val", then one entry per test set}. LSVQ: the official split (train rows
    less a seeded validation hold-out; test sets `test` and `test_1080p` as present); a plain
    label file with a split column: its train / val / test rows (val held out of train when
    it has none); other datasets: `random_split`."""
    if dataset == "lsvq" or (dataset in PLAIN_FORMATS and (table["split"] != "all").any()):
        return given_split(table, val_fraction, seed)
    return random_split(table, val_fraction, test_fraction, seed)


def clip_loader(table: pd.DataFrame, frames: str | Path, saliency: str | Path | None,
                scale: MosScale, size: Sequence[int], batch_size: int, workers: int,
                dist: Distributed = Distributed(), shuffle: bool = False,
                seed: int = SEED) -> DataLoader:
    """Batches of this rank's share of `table`: `frames` (B, T, 3, H, W), `saliency`
    (B, T, 1, H, W), `target` (B,), `mos` (B,), `video_id` (list). saliency None = zeros."""
    data = VQAClipDataset(table, frames, saliency, scale, tuple(size))
    sampler = ShardSampler(len(data), dist, shuffle=shuffle, seed=seed)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=quiet_worker)


# ----------------------------------------------------------------------------- model

def build_model(config: argparse.Namespace) -> QualityNet:
    """From --init (a quality checkpoint: its architecture and weights) or from the options."""
    if config.init:
        return checkpoint_network(config.init, "quality")[0]
    return build_quality_model(backbone=config.backbone, variant=config.variant,
                               saliency_alpha=config.saliency_alpha, weights=config.weights)


def training_model(model: QualityNet, config: argparse.Namespace,
                   device: torch.device) -> torch.nn.Module:
    """`model` on `device`, its trunk in channels_last on CUDA (the layout the fast bf16
    convolutions want; VQA.QualityNet.to_channels_last), torch.compile'd with --compile.
    Prediction and checkpoints use the plain model inside (runtime.unwrap), so checkpoints
    load into an uncompiled network."""
    model = model.to(device)
    if device.type == "cuda":
        model.to_channels_last()
    return compile_model(model, config.compile)


def saliency_folder(model: QualityNet, saliency: str | Path | None) -> Path | None:
    """The maps folder the model needs: None when its saliency weighting is off."""
    if model.saliency_alpha == 0:
        return None
    if not saliency:
        raise ValueError(f"the model weights frames by saliency (alpha {model.saliency_alpha}): "
                         "give --saliency DIR, or train with --saliency-alpha 0")
    return Path(saliency)


# ----------------------------------------------------------------------------- prediction and scores

@torch.inference_mode()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            progress: bool = True, precision: str | None = None) -> pd.DataFrame:
    """`video_id, mos, prediction` (MOS units, by the loader's dataset scale) for the
    videos of `loader` (this rank's shard under DDP; gather with `gather_predictions`), the
    network at `precision` (default: the device's), the predictions taken in fp32."""
    model = unwrap(model).eval()
    precision = resolve_precision(precision, device)
    scale = loader.dataset.scale
    rows = []
    for batch in tqdm(loader, desc="predict", unit="batch", leave=False, disable=not progress):
        with precision_autocast(device, precision):
            pred = model(batch["frames"].to(device, non_blocking=True),
                         batch["saliency"].to(device, non_blocking=True))
        rows += zip(batch["video_id"], batch["mos"].tolist(),
                    scale.to_mos(pred.float().cpu().numpy()).tolist())
    return pd.DataFrame(rows, columns=["video_id", "mos", "prediction"])


def gather_predictions(frame: pd.DataFrame, dist: Distributed) -> pd.DataFrame:
    """Every rank's predictions, on every rank."""
    return pd.concat(gather_objects(frame, dist), ignore_index=True)


def score_predictions(predictions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Adds `mapped` (the logistic fit of prediction to MOS) and returns vqa_metrics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vqa_metrics warns about the same fit just below
        mapped = logistic_map(predictions["prediction"], predictions["mos"])
    return predictions.assign(mapped=mapped), vqa_metrics(predictions["prediction"], predictions["mos"])


def set_name(dataset: str, split: str) -> str:
    """Row name of a test set in results tables: `LSVQ`, `LSVQ-1080p`, `KoNViD-1k`, ..."""
    return DISPLAY_NAMES[dataset] + ("-1080p" if split == "test_1080p" else "")


def results_table(metrics: dict[str, dict[str, float]], average: bool = True) -> pd.DataFrame:
    """The paper's table, one row per set: Dataset | PLCC | SRCC | KRCC | RMSE |
    PLCC (logistic) | n; with `average` and several sets, an `Average` row of the
    correlations (RMSE is in each dataset's own units, so it is not averaged; an undefined
    correlation makes its average undefined)."""
    rows = [{"Dataset": name, **{col: m[key] for col, key in METRIC_OF_COLUMN.items()}}
            for name, m in metrics.items()]
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if average and len(rows) > 1:
        correlations = ["PLCC", "SRCC", "KRCC", "PLCC (logistic)"]
        # skipna=False: an average that silently left out an undefined set would mislead
        table.loc[len(table)] = {"Dataset": "Average", **table[correlations].mean(skipna=False).to_dict(),
                                 "RMSE": float("nan"), "n": int(table["n"].sum())}
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """A markdown table; floats with 3 decimals, undefined values as `n/a`."""
    def cell(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return "n/a" if np.isnan(value) else f"{value:.3f}"
        return str(value)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_results(table: pd.DataFrame, out: str | Path, stem: str = "results") -> Path:
    """`<stem>.md`, `<stem>.csv` and `<stem>.json` (undefined values as null) in `out`;
    prints the markdown. Returns the markdown file."""
    out = Path(out)
    markdown = markdown_table(table)
    for suffix, text in ((".md", markdown), (".csv", table.to_csv(index=False)),
                         (".json", table.to_json(orient="records", indent=1))):
        with atomic_path(out / f"{stem}{suffix}") as tmp:
            tmp.write_text(text)
    print(markdown)
    return out / f"{stem}.md"


def write_predictions(predictions: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False, float_format="%.6g")


# ----------------------------------------------------------------------------- training

def train_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                scheduler: Any, config: argparse.Namespace, device: torch.device,
                desc: str = "train", progress: bool = True,
                dist: Distributed = Distributed()) -> float:
    """One pass over this rank's shard; returns the mean loss per clip over all ranks."""
    model.train()
    total, count = 0.0, 0
    precision = resolve_precision(config.precision, device)
    with join_context(model):
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress):
            target = batch["target"].to(device, non_blocking=True)
            with precision_autocast(device, precision):
                pred = model(batch["frames"].to(device, non_blocking=True),
                             batch["saliency"].to(device, non_blocking=True))
            # the loss in fp32 whatever the forward's precision
            loss = quality_loss(pred.float(), target, config.plcc_weight, config.rank_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(target)
            count += len(target)
    sums = gather_objects((total, count), dist)
    return sum(s for s, _ in sums) / max(sum(c for _, c in sums), 1)


def validation_score(metrics: dict[str, float]) -> float:
    """Mean of SRCC and PLCC; -inf when undefined (e.g. constant predictions)."""
    score = (metrics["srcc"] + metrics["plcc"]) / 2
    return -float("inf") if np.isnan(score) else float(score)


def settings_of(config: argparse.Namespace) -> dict[str, Any]:
    """The run's options as plain values, for the checkpoint."""
    def plain(value: Any) -> Any:
        return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
    return {key: plain(value) for key, value in vars(config).items()}


def barrier(dist: Distributed) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    gather_objects(None, dist)


def train(config: argparse.Namespace, splits: dict[str, pd.DataFrame] | None = None) -> Path:
    """Train, keep the best-on-validation and the last checkpoint, test the best; returns
    the best checkpoint's path. `splits` ({"train", "val", test sets...}) replaces the
    split made from the options (evaluate_vqa's repeated-split protocol passes its own);
    --splits FILE reads it from a file. The split used is written to OUT/splits.csv."""
    if config.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    dist, device = init_distributed(pick_device(config.device))
    seed_everything(config.seed)
    out = Path(config.out)
    if dist.is_main:
        writable_folder(out)
    if splits is None:
        table = load_table(config)
        splits = (read_splits(config.splits, table) if config.splits else
                  split_table(table, config.dataset, config.val_fraction, config.test_fraction,
                              config.seed))
    if dist.is_main:
        write_splits(splits, out / SPLITS)
    scale = MosScale.fit(splits["train"]["mos"])
    model = build_model(config)
    maps = saliency_folder(model, config.saliency)

    def loader(name: str, shuffle: bool = False) -> DataLoader:
        return clip_loader(splits[name], config.frames, maps, scale, config.size,
                           config.batch_size, config.workers, dist, shuffle, config.seed)

    train_loader, val_loader = loader("train", shuffle=True), loader("val")
    config.precision = resolve_precision(config.precision, device)
    model = wrap_for_training(training_model(model, config, device), dist, device, config.sync_bn)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = batches_per_epoch(train_loader, dist)
    scheduler = warmup_cosine(optimizer, int(round(config.warmup * steps)), config.epochs * steps)
    log = CsvLog(out / "log.csv", LOG_FIELDS)
    start, best_score, best_epoch = 0, None, None
    payload = resume_checkpoint(out / "last.pt", "quality") if config.resume else None
    if payload is not None:
        start = restore_training(payload, model, optimizer, scheduler, out / "last.pt")
        best_score, best_epoch = payload["best_score"], payload["best_epoch"]
    if dist.is_main:
        log.resume_at(start)  # rows are numbered from 0: keeps those of the finished epochs

    for epoch in range(start, config.epochs):
        train_loader.sampler.set_epoch(epoch)
        loss = train_epoch(model, train_loader, optimizer, scheduler, config, device,
                           f"epoch {epoch + 1}/{config.epochs}", dist.is_main, dist)
        sync_optimizer(optimizer, scheduler, dist)
        val = gather_predictions(predict(model, val_loader, device, dist.is_main,
                                         config.precision), dist)
        _, metrics = score_predictions(val)
        score = validation_score(metrics)
        improved = best_score is None or score > best_score
        if improved:
            best_score, best_epoch = score, epoch
        if dist.is_main:
            checkpoint = training_payload(
                model, unwrap(model).config, optimizer, scheduler, epoch + 1, metrics,
                settings_of(config), kind="quality",
                mos_scale={"low": scale.low, "high": scale.high}, frame_size=list(config.size),
                best_score=best_score, best_epoch=best_epoch,
                **{TRAINED_ON: trained_on(config.dataset, len(splits["train"]),
                                          Path(config.labels).parent)})
            # the log first: a crash before the checkpoints are saved resumes from the
            # previous last, which drops this epoch's row and redoes the epoch
            log.append({"epoch": epoch, "lr": scheduler.get_last_lr()[0], "train_loss": loss,
                        **{f"val_{k}": metrics[k] for k in ("plcc", "srcc", "krcc", "rmse")},
                        "val_score": score, "best": int(improved)})
            save_epoch_checkpoints(out / "best.pt", out / "last.pt", checkpoint, improved)
            figures.write_curves(out / "log.csv", CURVE_PANELS, CURVES_TITLE)
            tqdm.write(f"epoch {epoch + 1}: loss {loss:.4f}, val SRCC {metrics['srcc']:.3f} "
                       f"PLCC {metrics['plcc']:.3f}" + (" (best)" if improved else ""))
    if dist.is_main and config.slim_checkpoints:
        slim_checkpoints(out / "best.pt", out / "last.pt")
    barrier(dist)
    best = out / "best.pt"
    unwrap(model).load_state_dict(load_checkpoint(best, device)["model_state"])
    evaluate_best(model, {name: loader(name) for name in splits if name not in ("train", "val")},
                  config.dataset, out, device, dist, config.precision)
    barrier(dist)  # the ranks leave together, once rank 0 has written its files
    return best


def evaluate_best(model: torch.nn.Module, loaders: dict[str, DataLoader], dataset: str,
                  out: Path, device: torch.device, dist: Distributed,
                  precision: str | None = None) -> None:
    """Predictions of every test set and the results table (rank 0 writes them)."""
    metrics = {}
    for split, test_loader in loaders.items():
        if len(test_loader.dataset) == 0:
            continue
        scored, metrics[set_name(dataset, split)] = score_predictions(
            gather_predictions(predict(model, test_loader, device, dist.is_main, precision),
                               dist))
        if dist.is_main:
            write_predictions(scored, out / f"predictions_{split}.csv")
    if metrics and dist.is_main:
        write_results(results_table(metrics), out)


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--dataset", default=DATASET, choices=sorted(DISPLAY_NAMES),
                        help="label format of --labels; csv and labels-txt read any labelled set "
                             "(see the README)")
    parser.add_argument("--labels", default=LABELS, required=LABELS is None,
                        help="the dataset's official label file, or a csv / labels-txt file")
    add_label_arguments(parser)
    parser.add_argument("--splits", help="use exactly the splits of this video_id,split file "
                        "(such as the splits.csv every run writes) instead of drawing them")
    parser.add_argument("--labels-1080p", default=LABELS_1080P,
                        help="LSVQ: labels_test_1080p.csv, tested as a second set")
    parser.add_argument("--frames", default=FRAMES, help="stored frames (extract_frame.py)")
    parser.add_argument("--saliency", default=SALIENCY,
                        help="stored saliency maps (inference_sal.py); unused with --saliency-alpha 0")
    parser.add_argument("--out", default=OUT, help="checkpoints, log and results")
    parser.add_argument("--backbone", default=BACKBONE, choices=sorted(BACKBONES),
                        help="ResNet trunk of the quality network")
    parser.add_argument("--variant", default=VARIANT, choices=VARIANTS,
                        help="head: spatial mean, temporal transformer, or both (fusion)")
    parser.add_argument("--saliency-alpha", type=float, default=SALIENCY_ALPHA,
                        help="saliency weighting strength a; 0 = off")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--weights", default=WEIGHTS,
                       help="backbone start: 'imagenet' or a torchvision state-dict file")
    start.add_argument("--no-pretrained", dest="weights", action="store_const", const=None,
                       help="random backbone initialisation")
    start.add_argument("--init", default=INIT,
                       help="fine-tune from this quality checkpoint (architecture and weights)")
    parser.add_argument("--size", type=int, nargs=2, default=SIZE, metavar=("H", "W"),
                        help="frame height and width of the network input")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="clips per batch (per process under torchrun)")
    parser.add_argument("--lr", type=float, default=LR, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY,
                        help="AdamW weight decay")
    parser.add_argument("--warmup", type=float, default=WARMUP, help="epochs of warm-up")
    parser.add_argument("--plcc-weight", type=float, default=PLCC_WEIGHT,
                        help="weight of the 1 - PLCC loss term")
    parser.add_argument("--rank-weight", type=float, default=RANK_WEIGHT,
                        help="weight of the pairwise ranking hinge")
    parser.add_argument("--grad-clip", type=float, default=GRAD_CLIP,
                        help="maximum gradient norm (0: no clipping)")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                        help="share of the training videos held out for validation (model choice)")
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                        help="share of the videos tested (not LSVQ, which has its own test set)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="data-loading processes")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed of the split, the initialisation and the data order")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun on GPUs: BatchNorm statistics over all ranks' batches")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pt (from the start if there is none yet)")
    parser.add_argument("--slim-checkpoints", action="store_true",
                        help="when training ends, remove last.pt and strip best.pt of the "
                             "optimizer, schedule and random states (a third of its size; the "
                             "run can then not be --resume'd)")
    add_precision_arguments(parser, "the network for training")
    add_device_argument(parser)
    config = parser.parse_args(argv)
    config.size = tuple(config.size)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: trained and tested on every video; 1: done, but some rows or videos were
    left out (the warnings say which); 2: an error stopped the run."""
    config = parse_args(argv)
    problems = len(PROBLEMS)
    try:
        best = train(config)
    except (OSError, ValueError) as err:  # LabelFileError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        close_distributed()
    print(f"best checkpoint: {best}")
    return 1 if len(PROBLEMS) > problems else 0


if __name__ == "__main__":
    run_script(main)
