"""Stage 2: train and validate the saliency network on DHF1K or DIEM, or on an eye-tracking
set of still images (SALICON, MIT1003, CAT2000, SUN500, a fixation table).

    python train_sal.py --dataset dhf1k --root DHF1K/ --out runs/saliency --epochs 20
    python train_sal.py --dataset dhf1k --root DHF1K/ --out runs/saliency --epochs 20 --resume
    python train_sal.py --evaluate runs/saliency/best.pt --dataset dhf1k --root DHF1K/ --split val
    python train_sal.py --dataset salicon --root SALICON/ --out runs/salicon --size 240 320
    python train_sal.py --dataset dhf1k --root DHF1K/ --out runs/saliency --init runs/salicon/best.pt
    torchrun --standalone --nproc-per-node 4 train_sal.py --dataset dhf1k --root DHF1K/ \\
        --out runs/saliency --sync-bn

Each step sees clips of --clip-len consecutive annotated frames with their maps; the loss is
l_kl * KL(G || P) - l_cc * CC(P, G) - l_nss * NSS(P, F) per frame (dagr/losses.py). Every epoch
is validated with the saliency metrics of metrics.py on the validation videos (DHF1K 601-700,
DIEM's test fold); the epoch with the highest validation CC is kept as best.pt. Writes into
--out: best.pt, last.pt (--resume continues from it exactly), log.csv and curves.png.
Details: docs/pipeline.md, "Stage 2".
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from dagr import paper
from dagr.ablation import (LAST_EPOCHS, Variant, collect, curve_folder, finished, run_folder, run_name,
                           variants, write_curve, write_results)
from dagr.checkpoints import checkpoint_network
from dagr.cli import deprecated_alias, run_script, script_parser
from dagr.datasets import FOLDS, SALIENCY_SETS, saliency_help, saliency_videos
from dagr.device import pick_device
from dagr.distributed import Distributed, ShardSampler, distributed_job, wrap_for_training
from dagr.evaluation import evaluate, evaluation_clips, format_table, validate
from dagr.files import writable_folder
from dagr.global_context import read_settings
from dagr.labels import reported_problems
from dagr.figures import write_prediction_grid
from dagr.losses import probability_maps, saliency_loss
from dagr.precision import compile_model, resolve_precision
from dagr.provenance import TRAINED_ON, trained_on
from dagr.reference_maps import CentrePrior, SpectralResidual, fit_centre_prior
from dagr.registers import (CATEGORY_TABLE, far_context_effect, register_states,
                            video_categories, write_state_figure)
from dagr.seeding import seed_everything
from dagr.training import (BEST, Objective, TrainingRun, add_run_arguments, check_run_arguments,
                           fit, make_optimizer, settings_of, training_schedule)
from dagr.workers import available_cores, quiet_worker
from dataloader import SaliencyClipDataset
from metrics import SALIENCY_METRICS, headline
import sal_withreg
from sal_withreg import REGISTER_MODES, REGISTER_WRITES, build_saliency_model

# ----------------------------------------------------------------------------- config
DATASET = "dhf1k"         # a name of dagr/datasets.py's SALIENCY_SETS: dhf1k or diem
ROOT = "data/DHF1K"       # the dataset in its publisher's layout
OUT = "runs/saliency"
REGISTERS = paper.REGISTERS  # 0: the UNet3D baseline
REGISTER_MODE = "attention"
REGISTER_WRITE = "mix"    # how attention registers write back: mix, film or token (docs/registers.md)
READ_LEVELS = sal_withreg.READ_LEVELS    # where attention registers read
WRITE_LEVELS = sal_withreg.WRITE_LEVELS  # where they write back (film): every decoder level
SALIENCY_WIDTH = paper.UNET_WIDTH  # U-Net base width
SIZE = paper.FRAME_SIZE    # frame height, width
EPOCHS = 20
CLIP_LEN = paper.FRAMES_PER_VIDEO  # frames per clip
CLIPS_PER_VIDEO = 4       # training clips per video and epoch
VAL_CLIPS = 2             # validation clips per video, spread evenly over it
STILL = {"clip_len": 1, "clips_per_video": 1, "val_clips": 1}  # their defaults on image sets
FLIP = False              # mirror each training clip left to right with probability 1/2
FOLD = 0                  # a set without an official split validates on this of its 5 folds
TRAIN_LIMIT = 0           # train on this many training videos or images (0: all)
INIT = None               # start from this checkpoint's network (e.g. one trained on images)
BATCH_SIZE = 4            # clips per step (per process under torchrun)
LR = 1e-4
WEIGHT_DECAY = 0.01       # on weight matrices and kernels only, not on biases and norms
WARMUP = 1 / 6            # epochs of warm-up: 100 of the 600 optimizer steps of a DHF1K epoch
GRAD_ACCUM = 1            # batches per optimizer step
CLIP_GRAD = 1.0           # maximum gradient norm; 0 turns clipping off
L_KL, L_CC, L_NSS = 1.0, 1.0, 0.0
WORKERS = min(4, available_cores())  # data-loading processes (no more than the cores)
SEED = 0
SPLIT = "val"             # split that --evaluate scores: val, train or test
SEEDS = (0, 1, 2)         # --ablation: seeds of each variant
LEARNING_CURVE = None     # --ablation: also train on these numbers of training videos
FAR_CONTEXT_VIDEOS = 100  # --ablation on the global-context check: clips of its far-context test
# -----------------------------------------------------------------------------

KIND = "saliency"
STATE_FIGURE = "registers.png"  # --ablation: the attention network's register states
PREDICTION_FIGURE = "predictions.png"  # --ablation: validation frames and every model's map
PREDICTION_ROWS = 4
CURVES_TITLE = "saliency training; best epoch: highest validation CC"


def model_arguments(config: Any) -> dict[str, Any]:
    """Constructor arguments of the saliency network (stored in checkpoints)."""
    return {"channels": config.saliency_width, "registers": config.registers,
            "register_mode": config.register_mode, "read_levels": list(config.read_levels),
            "register_write": config.register_write, "write_levels": list(config.write_levels)}


def start_network(config: Any) -> tuple[nn.Module, dict[str, Any]]:
    """(network, its constructor arguments): --init's trained network, else a fresh one
    built from the options."""
    if config.init:
        model, payload = checkpoint_network(config.init, KIND)
        kwargs = payload["model_kwargs"]
        # the run's settings then say which network it trained, not the unused options
        config.saliency_width = kwargs["channels"]
        for name in ("registers", "register_mode", "read_levels", "register_write",
                     "write_levels"):
            setattr(config, name, kwargs.get(name, getattr(config, name)))
        return model, kwargs
    return build_saliency_model(**model_arguments(config)), model_arguments(config)


def training_model(model: nn.Module, config: Any, device: torch.device) -> nn.Module:
    """`model` on `device`, channels_last_3d on CUDA (the layout cuDNN's fast 3D kernels
    want), torch.compile'd with --compile (checkpoints hold the plain network)."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    return compile_model(model, config.compile)


def clip_logits(model: nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """A batch of clips (B, 3, T, H, W) -> logits (B, 1, T, H, W)."""
    return model(batch["frames"].to(device))


def clip_loss(logits: torch.Tensor, batch: dict, device: torch.device, config: Any) -> torch.Tensor:
    return saliency_loss(logits, batch["maps"].to(device), batch["fixations"].to(device),
                         config.l_kl, config.l_cc, config.l_nss)


def train(config: Any) -> Path:
    """Train with the options of `config` (`parse_args`' Namespace); returns the path of the
    best checkpoint. Under torchrun only rank 0 writes files."""
    with distributed_job(pick_device(config.device)) as (dist, device):
        return _train(config, dist, device)


def _train(config: Any, dist: Distributed, device: torch.device) -> Path:
    out, size = Path(config.out), tuple(config.size)
    train_videos = saliency_videos(config.dataset, config.root, "train", config.fold,
                                   config.train_limit)
    val_data = evaluation_clips(saliency_videos(config.dataset, config.root, "val", config.fold),
                                config.clip_len, size, config.val_clips)
    if dist.is_main:  # after the data is read: a run refused for its data leaves no folder
        writable_folder(out)
    seed_everything(config.seed)
    config.precision = resolve_precision(config.precision, device)
    network, network_kwargs = start_network(config)
    model = wrap_for_training(training_model(network, config, device), dist, device,
                              config.sync_bn)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    train_data = SaliencyClipDataset(train_videos, config.clip_len, size, config.clips_per_video,
                                     starts="random", seed=config.seed, flip=config.flip)
    loader = DataLoader(train_data, config.batch_size,
                        sampler=ShardSampler(len(train_data), dist, shuffle=True, seed=config.seed),
                        num_workers=config.workers, pin_memory=device.type == "cuda",
                        worker_init_fn=quiet_worker)
    return fit(TrainingRun(
        out=out, model=model, model_kwargs=network_kwargs, optimizer=optimizer,
        scheduler=training_schedule(optimizer, config.warmup, config.epochs, loader, dist,
                                    config.grad_accum),
        loader=loader,
        objective=Objective(clip_logits, functools.partial(clip_loss, config=config)),
        validate=lambda plain: validate(plain, val_data, device, dist, config.batch_size,
                                        config.workers, dist.is_main, config.precision),
        best_metric="cc", logged=headline(SALIENCY_METRICS), curves_title=CURVES_TITLE,
        settings=settings_of(config),
        payload={"kind": KIND, TRAINED_ON: trained_on(config.dataset, len(train_videos),
                                                      config.root)},
        epochs=config.epochs, device=device, precision=config.precision, dist=dist,
        grad_accum=config.grad_accum, clip_grad=config.clip_grad, backward_guard=True,
        resume=config.resume, slim=config.slim_checkpoints,
        about=f"{len(train_videos)} training / {len(val_data.videos)} validation videos"))


def ablation(config: Any) -> Path:
    """--ablation: each chosen variant (dagr/ablation.py) trained with each of --seeds, as
    runs of `train` in <out>/<variant>/seed_<s>/ (<out>/fold_<k>/... with --cross-validate)
    that differ from `config` only in their register options, seed and fold; finished runs
    are kept, a stopped one resumes. Then the table (mean ± std over the runs, beside the
    centre prior and spectral residual) and the figures; with --learning-curve, the same runs
    on fewer training videos (first fold) and their table. Returns the table's markdown file."""
    out, chosen = Path(config.out), [variants(config.registers or paper.REGISTERS)[name] for name in config.ablation]
    folds = range(FOLDS) if config.cross_validate else [config.fold]
    read_settings(config.root)  # a check's settings that cannot be read are refused first
    if config.cross_validate:  # refused before any training when the set has its own split
        saliency_videos(config.dataset, config.root, "val", FOLDS - 1)
    results = [fold_results(fold_config(config, fold), fold_folder(config, fold), chosen)
               for fold in folds]
    about = (f"Register ablation on {config.dataset} ({Path(config.root).name}): width {config.saliency_width}, "
             f"{config.size[0]}x{config.size[1]}, {config.epochs} epochs, clips of "
             f"{config.clip_len} frames, lr {config.lr:g}, seeds {' '.join(map(str, config.seeds))}"
             f"{f', {FOLDS}-fold cross-validation' if config.cross_validate else ''}; "
             "validation metrics of each run's best epoch (highest CC) and the mean CC of its "
             f"last {LAST_EPOCHS} epochs; beside them the centre prior (one centred Gaussian "
             "fitted on the training maps) and spectral residual (a classical model), scored "
             "on the same clips (docs/gaze.md)")
    if "far_change" in results[0][0]:
        about += ("; far change: mean drop of the logit at the odd disk when only the disks "
                  "beyond the baseline's reach change, odd first: share of clips and their "
                  "counterparts whose highest disk is the odd one (a network that prefers a "
                  "colour: 1/2), on "
                  f"{config.far_context_videos} fresh clips (docs/registers.md)")
    table = write_results(pd.concat([runs for runs, *_ in results], ignore_index=True), out, about)
    first, first_out = fold_config(config, folds[0]), fold_folder(config, folds[0])
    references, models, val_data = results[0]
    networks = {variant.name: checkpoint_network(run_folder(first_out, variant, config.seeds[0]) / BEST,
                                                 KIND)[0] for variant in chosen}
    prediction_figure(first, {**models, **networks}, val_data, out / PREDICTION_FIGURE)
    if config.learning_curve:
        learning_curve(first, first_out, chosen, references[references["seed"].isna()], out)
    attention = [v for v in chosen if v.options.get("register_mode") == "attention"][:1]
    if attention:
        state_figure(first, run_folder(first_out, attention[0], config.seeds[0]) / BEST,
                     out / STATE_FIGURE)
    return table


def fold_config(config: Any, fold: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(config), "fold": fold})


def fold_folder(config: Any, fold: int) -> Path:
    """Where the ablation's runs validated on `fold` train: --out, or its fold_<k>/ with
    --cross-validate."""
    return Path(config.out) / f"fold_{fold}" if config.cross_validate else Path(config.out)


def fold_results(config: Any, out: Path, chosen: Sequence[Variant]
                 ) -> tuple[pd.DataFrame, dict[str, nn.Module], SaliencyClipDataset]:
    """(rows: the references, then every finished run of `chosen` in `out`, each with its
    fold; the reference models; the validation clips) after training what is not finished,
    on --fold's split."""
    train_variants(config, out, chosen, limit=0)
    runs = collect(out, chosen, config.seeds, config.epochs)
    if config.far_context_videos > 0 and (Path(config.root) / CATEGORY_TABLE).is_file():
        runs = with_far_context(runs, out, chosen, config)
    training = saliency_videos(config.dataset, config.root, "train", config.fold)
    models = reference_models(evaluation_clips(training, config.clip_len, config.size, 1))
    val_data = validation_clips(config)
    rows = pd.concat([reference_runs(config, models, val_data, len(training)), runs],
                     ignore_index=True)
    return rows.assign(fold=config.fold), models, val_data


def train_variants(config: Any, out: Path, chosen: Sequence[Variant], limit: int) -> None:
    """Train each of `chosen` with each of --seeds into `out`, on `limit` training videos
    (0: all); finished runs are kept."""
    for variant in chosen:
        for seed in config.seeds:
            folder = run_folder(out, variant, seed)
            if finished(folder, config.epochs):
                print(f"{variant.name}, seed {seed}: finished earlier, kept ({folder})")
                continue
            print(f"\n{variant.name}, seed {seed} -> {folder}")
            train(argparse.Namespace(**{**vars(config), **variant.options, "seed": seed,
                                        "out": str(folder), "resume": True, "ablation": None,
                                        "train_limit": limit}))


def reference_models(training: SaliencyClipDataset) -> dict[str, nn.Module]:
    """What the networks must beat: the centre prior fitted on the `training` clips, and
    spectral residual (dagr/reference_maps.py)."""
    return {"centre prior": CentrePrior(training.size, *fit_centre_prior(training)),
            "spectral residual": SpectralResidual()}


def reference_runs(config: Any, models: dict[str, nn.Module], val_data: SaliencyClipDataset,
                   training: int) -> pd.DataFrame:
    """Rows of the ablation's table for the reference `models`, scored on the networks'
    validation clips `val_data`: their metrics and the number of `training` videos (they
    train nothing: no minutes)."""
    device = pick_device(config.device)
    rows = []
    for name, model in models.items():
        metrics = validate(model.to(device), val_data, device, batch_size=config.batch_size,
                           progress=False)
        rows.append({"variant": name, **metrics, "training": training})
    return pd.DataFrame(rows)


def validation_clips(config: Any) -> SaliencyClipDataset:
    return evaluation_clips(saliency_videos(config.dataset, config.root, "val", config.fold),
                            config.clip_len, config.size, config.val_clips)


def prediction_figure(config: Any, models: dict[str, nn.Module], data: SaliencyClipDataset,
                      path: Path) -> Path:
    """predictions.png: the first frame of the first PREDICTION_ROWS validation videos of
    `data` (in the set's order, not chosen by score), the human map, and each model's map."""
    items = [data[video * data.clips_per_video]
             for video in range(min(PREDICTION_ROWS, len(data.videos)))]
    frames = torch.stack([item["frames"] for item in items])  # (N, 3, T, H, W)
    device = pick_device(config.device)
    with torch.inference_mode():
        predictions = {name: [m.numpy() for m in
                              probability_maps(model.to(device).eval()(frames.to(device)))[:, 0].cpu()]
                       for name, model in models.items()}
    return write_prediction_grid(
        [(item["frames"][:, 0].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for item in items],
        [item["maps"][0, 0].numpy() for item in items], predictions,
        [item["video_id"] for item in items], path,
        f"{config.dataset}: validation frames, the human maps and each model's "
        f"(networks: seed {config.seeds[0]}, best epoch)")


def learning_curve(config: Any, runs_out: Path, chosen: Sequence[Variant],
                   references: pd.DataFrame, out: Path) -> Path:
    """--learning-curve: the chosen variants and seeds trained on each number of training
    videos into `runs_out`, and on all of them (the ablation's own runs), then
    learning_curve.md / .csv / .png in `out`. Returns the markdown file."""
    available = len(saliency_videos(config.dataset, config.root, "train", config.fold))
    parts = []
    limits = sorted({min(limit, available) for limit in (*config.learning_curve, available)})
    for limit in limits:  # the last is the full set: the ablation's own runs
        folder = runs_out if limit >= available else curve_folder(runs_out, limit)
        train_variants(config, folder, chosen, 0 if limit >= available else limit)
        parts.append(collect(folder, chosen, config.seeds, config.epochs))
    about = (f"Learning curve on {config.dataset} ({Path(config.root).name}), validated on fold "
             f"{config.fold}: the ablation's settings with "
             f"{', '.join(map(str, limits))} training videos or images of {available}, seeds {' '.join(map(str, config.seeds))}; validation "
             "metrics of each run's best epoch")
    return write_curve(pd.concat(parts, ignore_index=True), references, out, about)


def with_far_context(runs: pd.DataFrame, out: Path, chosen: Sequence[Variant], config: Any
                      ) -> pd.DataFrame:
    """`runs` (of the `chosen` variants) with dagr/registers.py's far-context measures of each
    run's best network, on clips of the global-context check at the runs' size and length."""
    device, settings = pick_device(config.device), read_settings(config.root)
    by_name = {variant.name: variant for variant in chosen}
    measured = []
    for run in runs.itertuples():
        model = checkpoint_network(run_folder(out, by_name[run.variant], run.seed) / BEST, KIND)[0]
        measured.append(far_context_effect(model, config.size, config.clip_len, device,
                                           config.far_context_videos, settings=settings))
    return pd.concat([runs, pd.DataFrame(measured, index=runs.index)], axis=1)


def state_figure(config: Any, checkpoint: Path, path: Path) -> Path:
    """The register states of `checkpoint`'s network over the validation videos (their first
    two principal components), coloured by the video's category when the dataset's folder has
    a category table (dagr/global_context.py writes one)."""
    model = checkpoint_network(checkpoint, KIND)[0]
    data = evaluation_clips(saliency_videos(config.dataset, config.root, "val", config.fold),
                            config.clip_len,
                            config.size, config.val_clips)
    ids, states = register_states(model, data, pick_device(config.device), config.batch_size)
    table = Path(config.root) / CATEGORY_TABLE
    categories = video_categories(table) if table.is_file() else None
    return write_state_figure(ids, states, path, f"register states of {run_name(checkpoint)} over "
                              f"{len(ids)} validation videos", categories)


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--dataset", choices=sorted(SALIENCY_SETS), default=DATASET,
                        help=saliency_help())
    parser.add_argument("--root", default=ROOT, help="the dataset's folder in its publisher's layout")
    parser.add_argument("--out", default=OUT, help="folder for checkpoints and the log")
    parser.add_argument("--registers", type=int, default=REGISTERS,
                        help="register tokens (0: the baseline)")
    parser.add_argument("--register-mode", choices=REGISTER_MODES, default=REGISTER_MODE,
                        help="how the registers meet the features: attention (read the features, "
                             "write back), or input (learned channels concatenated to the RGB frames)")
    parser.add_argument("--register-write", choices=REGISTER_WRITES, default=REGISTER_WRITE,
                        help="attention registers write back by a per-position MLP of the features "
                             "and the registers (mix), as feature-channel gains (film), or token "
                             "by token at the levels they read (token)")
    parser.add_argument("--read-levels", nargs="+", default=READ_LEVELS, metavar="LEVEL",
                        help="levels the registers read: rgb (the clip's colours where enc1's "
                             "features point, written back as a colour contrast at dec1), "
                             "bottleneck, enc0-enc3, dec0-dec3")
    parser.add_argument("--write-levels", nargs="+", default=WRITE_LEVELS, metavar="LEVEL",
                        help="levels the registers write back to with --register-write mix or film")
    deprecated_alias(parser, "--channels", parser.add_argument(
        "--saliency-width", type=int, default=SALIENCY_WIDTH, help="U-Net base width"))
    parser.add_argument("--clip-len", type=int,
                        help=f"frames per training clip (default {CLIP_LEN}; on image sets "
                             f"{STILL['clip_len']}: a longer clip repeats the image)")
    parser.add_argument("--clips-per-video", type=int,
                        help=f"training clips per video and epoch (default {CLIPS_PER_VIDEO}; "
                             f"on image sets {STILL['clips_per_video']})")
    parser.add_argument("--val-clips", type=int,
                        help=f"validation clips per video, evenly spread (default {VAL_CLIPS}; "
                             f"on image sets {STILL['val_clips']})")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=FLIP,
                        help="mirror each training clip left to right with probability 1/2")
    parser.add_argument("--fold", type=int, default=FOLD, choices=range(FOLDS),
                        metavar=f"0-{FOLDS - 1}",
                        help=f"on a set without an official split (sun500, fixation-table, "
                             f"...): validate on this of its {FOLDS} seeded folds, train on the "
                             "others (--evaluate uses the checkpoint's own)")
    parser.add_argument("--train-limit", type=int, default=TRAIN_LIMIT, metavar="N",
                        help="train on N of the training videos or images, a seeded choice "
                             "that grows by adding (for learning curves); 0: all")
    parser.add_argument("--init", default=INIT, metavar="CHECKPOINT",
                        help="start from this saliency checkpoint's network, architecture and "
                             "weights (the register options are then not used): image "
                             "pretraining before video (docs/gaze.md)")
    parser.add_argument("--l-kl", type=float, default=L_KL, help="weight of KL(G || P)")
    parser.add_argument("--l-cc", type=float, default=L_CC, help="weight of CC(P, G)")
    parser.add_argument("--l-nss", type=float, default=L_NSS, help="weight of NSS(P, fixations)")
    add_run_arguments(parser, size=SIZE, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR,
                      weight_decay=WEIGHT_DECAY, warmup=WARMUP, seed=SEED, grad_accum=GRAD_ACCUM, clip_grad=CLIP_GRAD,
                      workers=WORKERS)
    parser.add_argument("--ablation", nargs="*", metavar="VARIANT",
                        choices=list(variants(REGISTERS)),
                        help="train each VARIANT (default: all of "
                             f"{', '.join(variants(REGISTERS))}) with each of --seeds into "
                             "<out>/VARIANT/seed_S and write the table ablation.md and the figure "
                             "ablation.png; run it again to resume (docs/registers.md)")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS,
                        help="--ablation: the seeds of every variant")
    parser.add_argument("--cross-validate", action="store_true",
                        help=f"--ablation on a set without an official split: train and "
                             f"validate on each of its {FOLDS} folds in turn, into "
                             "<out>/fold_K/; the table pools every fold and seed")
    parser.add_argument("--learning-curve", type=int, nargs="+", metavar="N",
                        default=LEARNING_CURVE,
                        help="--ablation: also train every variant and seed on N training "
                             "videos or images (a nested seeded choice) for each N, into "
                             "<out>/train_N/ (with --cross-validate: the first fold's, "
                             "<out>/fold_0/train_N/), and write learning_curve.md and .png")
    parser.add_argument("--far-context-videos", type=int, default=FAR_CONTEXT_VIDEOS,
                        help="--ablation on the global-context check: fresh clips of its "
                             "far-context test (docs/registers.md); 0 skips it")
    parser.add_argument("--evaluate", metavar="CHECKPOINT",
                        help="print the metrics of CHECKPOINT on --split instead of training")
    parser.add_argument("--split", choices=("val", "train", "test"), default=SPLIT,
                        help="split scored by --evaluate")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args)
    check_saliency_arguments(parser, args)
    still = SALIENCY_SETS[args.dataset].still
    for name, video_default in (("clip_len", CLIP_LEN), ("clips_per_video", CLIPS_PER_VIDEO),
                                ("val_clips", VAL_CLIPS)):
        if getattr(args, name) is None:
            setattr(args, name, STILL[name] if still else video_default)
    if args.ablation == []:  # --ablation alone: every variant
        args.ablation = list(variants(args.registers or REGISTERS))
    return args


def check_saliency_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, in one line, the options that would be ignored or mean nothing together."""
    if args.ablation is None:
        for given, name in ((args.cross_validate, "--cross-validate"),
                            (args.learning_curve, "--learning-curve")):
            if given:
                parser.error(f"{name} goes with --ablation")
    elif args.init or args.train_limit:
        parser.error("--ablation trains its variants from scratch on every training video: "
                     "leave out --init and --train-limit (--learning-curve trains on fewer)")
    if args.train_limit < 0 or any(n < 1 for n in args.learning_curve or ()):
        parser.error("--train-limit and --learning-curve count training videos: give 1 or "
                     "more (--train-limit 0: all)")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: done with every video; 1: done, but some videos were left out (the
    warnings say which); 2: an error stopped the run."""
    config = parse_args(argv)
    try:
        with reported_problems() as problems:
            if config.evaluate:
                metrics = evaluate(config.evaluate, config.dataset, config.root, config.split,
                                   config.device, config.batch_size, config.workers,
                                   precision=config.precision)
                print(f"{config.evaluate} on {config.dataset} {config.split}:")
                print(format_table(metrics))
            elif config.ablation is not None:
                print((ablation(config)).read_text())
            else:
                print(f"best checkpoint: {train(config)}")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    run_script(main)
