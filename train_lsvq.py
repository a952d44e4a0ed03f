"""Stage 4: train the saliency-weighted quality network.

    python train_lsvq.py --dataset lsvq --labels labels_train_test.csv \\
        --labels-1080p labels_test_1080p.csv --frames frames/ --saliency maps/ --out runs/lsvq
    python train_lsvq.py --dataset konvid --labels KoNViD_1k_mos.csv --frames frames/ \\
        --saliency-alpha 0 --out runs/konvid

LSVQ follows its official split (train on the `is_test == False` rows less a seeded --val-fraction
hold-out; test on the `is_test` rows and on --labels-1080p); a label file with a split column is
split by it; any other set at random (seeded --test-fraction and --val-fraction). Targets are
MOS scaled to [0, 1] by the training split's range; the loss is L1 + (1 - PLCC) + a ranking
hinge (dagr/losses.py). The epoch with the best mean of validation SRCC and PLCC is kept as
best.pt, and the test sets are scored once with it after training. Writes into --out: best.pt,
last.pt (--resume), log.csv, curves.png, splits.csv, predictions_<set>.csv and
results.{md,csv,json}.
Details: docs/pipeline.md, "Stage 4".
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import functools
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader

from dagr import paper
from dagr.checkpoints import checkpoint_network, load_checkpoint, unwrap
from dagr.cli import run_script, script_parser
from dagr.datasets import QUALITY_SETS, quality_help, read_table
from dagr.device import pick_device
from dagr.distributed import Distributed, distributed_job, gather_objects, wrap_for_training
from dagr.evaluation import (clip_loader, evaluate_best, gather_predictions, predict,
                             quality_validation, saliency_folder)
from dagr.files import writable_folder
from dagr.labels import add_label_arguments, label_columns, reported_problems
from dagr.losses import quality_loss
from dagr.precision import compile_model, resolve_precision
from dagr.provenance import TRAINED_ON, trained_on
from dagr.seeding import seed_everything
from dagr.splits import SPLITS, random_split, read_splits, split_table, write_splits
from dagr.training import (Objective, TrainingRun, add_run_arguments, check_run_arguments, fit,
                           make_optimizer, settings_of, training_schedule)
from dagr.workers import available_cores
from dataloader import MosScale
from metrics import QUALITY_METRICS, QUALITY_SCORE, Metric, headline
from VQA import BACKBONES, VARIANTS, QualityNet, build_quality_model

# ----------------------------------------------------------------------------- config
DATASET = "lsvq"          # a name of dagr/datasets.py's QUALITY_SETS
LABELS = None             # the dataset's official label file
LABELS_1080P = None       # LSVQ only: labels_test_1080p.csv, a second test set
FRAMES = "frames"         # extract_frame.py output
SALIENCY = "saliency"     # inference_sal.py output (unused when saliency_alpha is 0)
OUT = "runs/quality"
BACKBONE = paper.BACKBONE
VARIANT = "fusion"        # fusion | spatial | temporal
SALIENCY_ALPHA = paper.SALIENCY_ALPHA  # 0 switches saliency weighting off
WEIGHTS = "imagenet"      # backbone start: "imagenet", a torchvision state-dict file, or None
INIT = None               # fine-tune from this quality checkpoint (its architecture and weights)
SIZE = paper.FRAME_SIZE   # frame height, width
EPOCHS = 20
BATCH_SIZE = 8
LR = 1e-4
WEIGHT_DECAY = 0.05       # on weight matrices and kernels only, not on biases and norms
WARMUP = 1.0              # epochs of linear warm-up before the cosine decay
PLCC_WEIGHT = 1.0         # weight of 1 - PLCC of the batch
RANK_WEIGHT = 0.3         # weight of the pairwise ranking hinge
GRAD_ACCUM = 1            # batches per optimizer step
CLIP_GRAD = 1.0           # max gradient norm; 0 = no clipping
VAL_FRACTION = 0.05
TEST_FRACTION = 0.2       # sets without a split of their own
WORKERS = min(4, available_cores())  # data-loading processes (no more than the cores)
SEED = 0
# -----------------------------------------------------------------------------

KIND = "quality"
CURVES_TITLE = "quality training; best epoch: highest validation score = (SRCC + PLCC) / 2"


def logged_metrics() -> list[Metric]:
    """What the log, the epoch's line and the curves show: the headline quality metrics of
    metrics.py and the score that picks the best epoch."""
    return [*headline(QUALITY_METRICS), QUALITY_SCORE]


def load_table(config: argparse.Namespace) -> pd.DataFrame:
    """`video_id, path, mos, split` of --labels, plus the LSVQ 1080p file when given."""
    table = read_table(config.dataset, config.labels, columns=label_columns(config))
    if config.labels_1080p:
        if config.dataset != "lsvq":
            raise ValueError("--labels-1080p belongs to LSVQ; drop it or use --dataset lsvq")
        table = pd.concat([table, read_table("lsvq", config.labels_1080p)], ignore_index=True)
    return table


def make_splits(config: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """{"train", "val", test sets...}: --splits FILE, a random split (--random-split), or the
    labels' own (dagr/splits.py)."""
    table = load_table(config)
    if config.splits:
        return read_splits(config.splits, table)
    if config.random_split:
        return random_split(table, config.val_fraction, config.test_fraction, config.seed)
    return split_table(table, config.val_fraction, config.test_fraction, config.seed)


def build_model(config: argparse.Namespace) -> QualityNet:
    """From --init (a quality checkpoint: its architecture and weights) or from the options."""
    if config.init:
        return checkpoint_network(config.init, KIND)[0]
    return build_quality_model(backbone=config.backbone, variant=config.variant,
                               saliency_alpha=config.saliency_alpha, weights=config.weights)


def training_model(model: QualityNet, config: argparse.Namespace,
                   device: torch.device) -> torch.nn.Module:
    """`model` on `device`, its trunk in channels_last on CUDA (the layout the fast bf16
    convolutions want), torch.compile'd with --compile (checkpoints hold the plain network)."""
    model = model.to(device)
    if device.type == "cuda":
        model.to_channels_last()
    return compile_model(model, config.compile)


def clip_scores(model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """Frames (B, T, 3, H, W) and maps (B, T, 1, H, W) -> scores (B,) on the unit scale."""
    return model(batch["frames"].to(device, non_blocking=True),
                 batch["saliency"].to(device, non_blocking=True))


def clip_loss(pred: torch.Tensor, batch: dict, device: torch.device,
              config: argparse.Namespace) -> torch.Tensor:
    target = batch["target"].to(device, non_blocking=True)
    return quality_loss(pred.float(), target, config.plcc_weight, config.rank_weight)


def train(config: argparse.Namespace) -> Path:
    """Train, keep the best-on-validation and the last checkpoint, test the best; returns
    the best checkpoint's path. Under torchrun only rank 0 writes files."""
    with distributed_job(pick_device(config.device)) as (dist, device):
        return _train(config, dist, device)


def _train(config: argparse.Namespace, dist: Distributed, device: torch.device) -> Path:
    seed_everything(config.seed)
    out = Path(config.out)
    if dist.is_main:
        writable_folder(out)
    splits = make_splits(config)
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
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    best = fit(TrainingRun(
        out=out, model=model, model_kwargs=unwrap(model).config, optimizer=optimizer,
        scheduler=training_schedule(optimizer, config.warmup, config.epochs, train_loader, dist,
                                    config.grad_accum),
        loader=train_loader,
        objective=Objective(clip_scores, functools.partial(clip_loss, config=config)),
        validate=lambda plain: quality_validation(gather_predictions(
            predict(plain, val_loader, device, dist.is_main, config.precision), dist)),
        best_metric=QUALITY_SCORE.name, logged=logged_metrics(), curves_title=CURVES_TITLE,
        settings=settings_of(config),
        payload={"kind": KIND, "mos_scale": {"low": scale.low, "high": scale.high},
                 "frame_size": list(config.size),
                 TRAINED_ON: trained_on(config.dataset, len(splits["train"]),
                                        Path(config.labels).parent)},
        epochs=config.epochs, device=device, precision=config.precision, dist=dist,
        grad_accum=config.grad_accum, clip_grad=config.clip_grad, resume=config.resume,
        slim=config.slim_checkpoints,
        about=f"{len(splits['train'])} training / {len(splits['val'])} validation videos"))
    unwrap(model).load_state_dict(load_checkpoint(best, device)["model_state"])
    evaluate_best(model, {name: loader(name) for name in splits if name not in ("train", "val")},
                  config.dataset, out, device, dist, config.precision)
    gather_objects(None, dist)  # the ranks leave together, once rank 0 has written its files
    return best


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--dataset", default=DATASET, choices=sorted(QUALITY_SETS),
                        help=quality_help())
    parser.add_argument("--labels", default=LABELS, required=LABELS is None,
                        help="the dataset's official label file, or a csv / labels-txt file")
    add_label_arguments(parser)
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--splits", help="use exactly the splits of this video_id,split file "
                       "(such as the splits.csv every run writes) instead of drawing them")
    split.add_argument("--random-split", action="store_true",
                       help="draw a seeded random split even when the labels name one (the "
                            "fine-tuning protocol of evaluate_vqa.py)")
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
    parser.add_argument("--init", default=INIT,
                        help="fine-tune from this quality checkpoint: its architecture and "
                             "weights (the backbone options are then not used)")
    parser.add_argument("--plcc-weight", type=float, default=PLCC_WEIGHT,
                        help="weight of the 1 - PLCC loss term")
    parser.add_argument("--rank-weight", type=float, default=RANK_WEIGHT,
                        help="weight of the pairwise ranking hinge")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                        help="share of the training videos held out for validation (model choice)")
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                        help="share of the videos tested (not LSVQ, which has its own test set)")
    add_run_arguments(parser, size=SIZE, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR,
                      weight_decay=WEIGHT_DECAY, warmup=WARMUP, seed=SEED, grad_accum=GRAD_ACCUM, clip_grad=CLIP_GRAD,
                      workers=WORKERS)
    config = parser.parse_args(argv)
    check_run_arguments(parser, config)
    config.size = tuple(config.size)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: trained and tested on every video; 1: done, but some rows or videos were
    left out (the warnings say which); 2: an error stopped the run."""
    config = parse_args(argv)
    try:
        with reported_problems() as problems:
            best = train(config)
    except (OSError, ValueError) as err:  # LabelFileError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"best checkpoint: {best}")
    return 1 if problems else 0


if __name__ == "__main__":
    run_script(main)
