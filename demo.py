"""The whole pipeline on built-in demo data, one command (docs/demo.md).

    python demo.py                             # the demo (docs/demo.md: its time on 2 cores)
    python demo.py --size tiny --out /tmp/d    # the smallest end-to-end run (seconds)
    python demo.py --data-only --out DIR       # only the synthetic datasets, into DIR/data

Nothing is downloaded. dagr/demo_data.py writes a DHF1K-layout saliency set and a
KoNViD-1k-layout quality set (its docstring states the scenes and the MOS formula), and
dagr/global_context.py the global-context check; then the stage scripts run with their own
command-line options, as a user would run them:

1. extract_frame.py samples the quality clips' frames;
2. train_sal.py trains the saliency network twice, with registers and without (the UNet3D
   baseline), and scores both on the saliency set's validation videos;
3. inference_sal.py writes both networks' maps for the quality clips, and overlays;
4. train_lsvq.py trains the quality network three times on the same split and seed: saliency
   weighting a = 0.5 with the register network's maps (the demo model), a = 0.5 with the
   baseline's maps, and a = 0 (saliency off);
5. evaluate_vqa.py scores each on the held-out test split;
6. train_sal.py --ablation trains the baseline and attention registers on the global-context
   check, where only a comparison across the frame finds the salient disk (docs/registers.md).

Demo settings (small, so that it fits 2 CPU cores): 48 x 84 frames, 4 frames per quality clip
(the paper: 8), a U-Net of width 8, ResNet-18 trained from scratch (no ImageNet download).

It prints the demo model's results table (the paper's form), the ablation tables and where
everything is. Written to --out: `results.md` and `ablation.md` (each also .csv and .json),
`overlays.png`, `scatter.png`, `training_curves.png`, `register_attention.png` (matplotlib's
Agg renderer, no display needed), and the stages' own folders `data/`, `frames/`,
`saliency/`, `maps/`, `quality/`, `eval/`, `registers/` (the register ablation's table,
figure and register states). Checkpoints are kept without optimizer state (the trainers'
--slim-checkpoints), and of the quality runs only the demo model's
(`quality/saliency_registers/best.pt`, the one to score videos with) is kept once all three
are evaluated. A folder that an earlier demo run wrote is cleared first; any other non-empty
folder is refused.
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import pandas as pd
import torch

import extract_frame
import inference_sal
import train_lsvq
import train_sal
from dagr import demo_data, figures, global_context, paper
from dagr.ablation import run_folder, variants
from dagr.checkpoints import checkpoint_network
from dagr.cli import run_script, script_parser
from dagr.datasets import read_saliency_set
from dagr.device import add_device_argument
from dagr.evaluation import (RESULT_COLUMNS, evaluate, evaluation_clips, format_table,
                             write_results)
from dagr.images import read_image
from dagr.labelled_sets import LabelledSet, evaluate_sets
from dagr.losses import probability_maps
from dagr.registers import CATEGORY_TABLE, attention_maps, video_categories
from dagr.training import BEST, LOG
from dataloader import FRAME_LIST

# ----------------------------------------------------------------------------- config
OUT = "demo_out"
SIZE = "small"            # small: the demo; tiny: the smallest end-to-end run (tests)
SEED = 0
WORKERS = 2               # frame-extraction processes
REGISTERS = paper.REGISTERS  # register tokens of the saliency network that has them
REGISTER_MODE = "attention"
CHECK_VARIANTS = ("baseline", "attention")  # the global-context check's ablation (docs/registers.md
                                            # has the others: input, token write, N = 1, 8)
CHECK_SIZE = (global_context.HEIGHT, global_context.WIDTH)  # the check's frames: a wide strip
ATTENTION_CLIPS = 3       # validation clips of the check in register_attention.png
ALPHA = 0.5               # saliency weighting of the demo quality model
BACKBONE = "resnet18"     # trained from scratch: nothing to download
CLIP_FRAMES = 4           # frames per quality clip, all kept (the paper: 8); also the saliency
                          # network's training clip length
QUALITY_LR = 7e-4
VAL_FRACTION = 0.2        # quality split: validation share of the non-test clips
TEST_FRACTION = 0.25      # quality split: test share of all clips
OVERLAY_FRAMES = 4        # frames per clip in overlays.png (one clip per distorted region)
# -----------------------------------------------------------------------------


def about(text: str) -> Any:
    """A DemoSize field with its --help text."""
    return field(metadata={"help": text})


@dataclass(frozen=True)
class DemoSize:
    """How big a demo run is: the data written and the training it gets."""
    frame_size: tuple[int, int] = about("H, W of every clip, stored frame and network input")
    radius: int = about("disk radius in pixels (the salient region: twice that)")
    saliency_train: int = about("saliency set: training videos")
    saliency_val: int = about("saliency set: validation videos")
    saliency_frames: int = about("frames per saliency video")
    saliency_channels: int = about("saliency U-Net base width")
    saliency_epochs: int = about("saliency training epochs")
    saliency_clips: int = about("saliency training clips per video and epoch")
    quality_clips: int = about(f"quality set: clips of {CLIP_FRAMES} frames")
    quality_epochs: int = about("quality training epochs")
    check_train: int = about("global-context check: training videos")
    check_val: int = about("global-context check: validation videos")
    check_channels: int = about("global-context check: U-Net base width")
    check_epochs: int = about("global-context check: training epochs")
    check_clips: int = about("global-context check: training clips (frames) per video and epoch")

SIZES = {
    "tiny": DemoSize(frame_size=(32, 56), radius=5, saliency_train=4, saliency_val=2,
                     saliency_frames=8, saliency_channels=4, saliency_epochs=2, saliency_clips=1,
                     quality_clips=24, quality_epochs=2, check_train=4, check_val=2,
                     check_channels=2, check_epochs=1, check_clips=1),
    "small": DemoSize(frame_size=(48, 84), radius=9, saliency_train=24, saliency_val=6,
                      saliency_frames=16, saliency_channels=8, saliency_epochs=6, saliency_clips=2,
                      quality_clips=600, quality_epochs=4, check_train=240, check_val=60,
                      check_channels=8, check_epochs=5, check_clips=2),
}
SALIENCY_RUNS = {"registers": REGISTERS, "baseline": 0}  # name: register tokens
SALIENCY_NAMES = {"registers": f"UNet3D + {REGISTERS} registers",
                  "baseline": "UNet3D (no registers)", None: "-"}
QUALITY_RUNS = {          # name: (saliency run whose maps it reads, or None; weighting a)
    "saliency_registers": ("registers", ALPHA),
    "saliency_baseline": ("baseline", ALPHA),
    "no_saliency": (None, 0.0),
}
DEMO_MODEL = "saliency_registers"
CHECK_DIR = "GlobalContext"     # the global-context check's folder under data/
MARKER = "demo_settings.json"   # marks a folder as a demo run's, so that a re-run may clear it
STAGE_FOLDERS = ("data", "frames", "saliency", "maps", "quality", "eval", "registers")
QUALITY_METRICS = ["PLCC", "SRCC", "KRCC", "RMSE"]


@dataclass(frozen=True)
class Layout:
    """Where a demo run writes, all under `out`."""
    out: Path

    @property
    def saliency_set(self) -> Path:
        return self.out / "data" / demo_data.SALIENCY_DIR

    @property
    def quality_set(self) -> Path:
        return self.out / "data" / demo_data.QUALITY_DIR

    @property
    def labels(self) -> Path:
        return self.quality_set / demo_data.QUALITY_LABELS

    @property
    def check_set(self) -> Path:
        return self.out / "data" / CHECK_DIR

    @property
    def registers(self) -> Path:
        return self.out / "registers"

    @property
    def test_labels(self) -> Path:
        return self.out / "eval" / "KoNViD_1k_mos_test.csv"

    @property
    def frames(self) -> Path:
        return self.out / "frames"

    def saliency_run(self, name: str) -> Path:
        return self.out / "saliency" / name

    def maps(self, name: str) -> Path:
        return self.out / "maps" / name

    def quality_run(self, name: str) -> Path:
        return self.out / "quality" / name

    def evaluation(self, name: str) -> Path:
        return self.out / "eval" / name


# ----------------------------------------------------------------------------- progress

class Stages:
    """Prints a numbered line before each stage and its wall time after it."""

    def __init__(self, total: int):
        self.total, self.done, self.began = total, 0, time.perf_counter()

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}", flush=True)
        began = time.perf_counter()
        yield
        now = time.perf_counter()
        print(f"[{self.done}/{self.total}] done in {now - began:.0f} s "
              f"({now - self.began:.0f} s since the start)", flush=True)


def check_stage(code: int, script: str) -> None:
    """A stage script's main() returned `code`; anything but 0 stops the demo."""
    if code != 0:
        raise RuntimeError(f"{script} failed (exit status {code}); its messages are above")


# ----------------------------------------------------------------------------- stages

def prepare_folder(out: Path) -> None:
    """Make `out` ready: clear the stage folders of an earlier demo run there; refuse a
    non-empty folder that is not a demo run's."""
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"{out} is not empty and holds no earlier demo run; "
                              "give an empty or new folder with --out")
    for name in STAGE_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def write_data(layout: Layout, size: DemoSize, seed: int) -> None:
    """dagr/demo_data.py's saliency and quality sets, and dagr/global_context.py's check."""
    demo_data.write_saliency_set(layout.saliency_set, size.saliency_train, size.saliency_val,
                                 size.saliency_frames, size.frame_size, seed, size.radius)
    demo_data.write_quality_set(layout.quality_set, size.quality_clips, CLIP_FRAMES,
                                size.frame_size, seed, demo_data.DEMO_KINDS,
                                demo_data.REGION_TURNS, size.radius)
    global_context.write_global_context_set(layout.check_set, size.check_train, size.check_val,
                                            size=CHECK_SIZE, seed=seed)
    print(f"saliency set: {size.saliency_train} training + {size.saliency_val} validation videos "
          f"in {layout.saliency_set}\nquality set: {size.quality_clips} clips "
          f"({' or '.join(demo_data.DEMO_KINDS)}) in {layout.quality_set}\nglobal-context check: "
          f"{size.check_train} training + {size.check_val} validation videos in "
          f"{layout.check_set}")


def extract_frames(layout: Layout, size: DemoSize, workers: int) -> None:
    check_stage(extract_frame.main([
        "--dataset", "konvid", "--labels", str(layout.labels),
        "--video-root", str(layout.quality_set / demo_data.QUALITY_VIDEOS),
        "--out", str(layout.frames), "--num-frames", str(CLIP_FRAMES), "--size", *map(str, size.frame_size),
        "--workers", str(workers)]), "extract_frame.py")


def train_saliency(layout: Layout, size: DemoSize, name: str, seed: int, device: str) -> Path:
    """train_sal.py on the saliency set; returns the best checkpoint."""
    return train_sal.train(train_sal.parse_args([
        "--dataset", "dhf1k", "--root", str(layout.saliency_set),
        "--out", str(layout.saliency_run(name)), "--registers", str(SALIENCY_RUNS[name]),
        "--register-mode", REGISTER_MODE, "--channels", str(size.saliency_channels),
        "--size", *map(str, size.frame_size), "--epochs", str(size.saliency_epochs),
        "--clip-len", str(CLIP_FRAMES), "--clips-per-video", str(size.saliency_clips),
        "--val-clips", "2", "--batch-size", "4", "--lr", "3e-3", "--warmup", "10",
        "--workers", "0", "--seed", str(seed), "--device", device, "--slim-checkpoints"]))


def score_saliency(layout: Layout, checkpoint: Path, device: str) -> dict[str, float]:
    """train_sal.py's evaluation: metrics on the saliency set's validation videos."""
    metrics = evaluate(checkpoint, "dhf1k", layout.saliency_set, "val", device, progress=False)
    print(format_table(metrics))
    return metrics


def infer_maps(layout: Layout, name: str, device: str) -> None:
    """inference_sal.py: maps and overlays for the quality clips' stored frames."""
    check_stage(inference_sal.main([
        "--checkpoint", str(layout.saliency_run(name) / BEST),
        "--frames", str(layout.frames), "--out", str(layout.maps(name)), "--overlay",
        "--workers", "0", "--device", device]), "inference_sal.py")


def train_quality(layout: Layout, size: DemoSize, name: str, seed: int, device: str) -> Path:
    """train_lsvq.py on the quality set; returns the best checkpoint."""
    maps, alpha = QUALITY_RUNS[name]
    saliency = ["--saliency", str(layout.maps(maps))] if maps else []
    return train_lsvq.train(train_lsvq.parse_args([
        "--dataset", "konvid", "--labels", str(layout.labels), "--frames", str(layout.frames),
        *saliency, "--saliency-alpha", str(alpha), "--out", str(layout.quality_run(name)),
        "--backbone", BACKBONE, "--no-pretrained", "--size", *map(str, size.frame_size),
        "--epochs", str(size.quality_epochs), "--batch-size", "8", "--lr", str(QUALITY_LR),
        "--warmup", "0.5", "--val-fraction", str(VAL_FRACTION),
        "--test-fraction", str(TEST_FRACTION), "--workers", "0", "--seed", str(seed),
        "--device", device, "--slim-checkpoints"]))


def register_ablation(layout: Layout, size: DemoSize, seed: int, device: str) -> Path:
    """train_sal.py --ablation on the global-context check: the baseline and attention
    registers, one seed each; returns the table (ablation.md)."""
    check_stage(train_sal.main([
        "--ablation", *CHECK_VARIANTS, "--seeds", str(seed), "--dataset", "dhf1k",
        "--root", str(layout.check_set), "--out", str(layout.registers),
        "--channels", str(size.check_channels), "--size", *map(str, CHECK_SIZE),
        "--epochs", str(size.check_epochs), "--clip-len", "1",
        "--clips-per-video", str(size.check_clips), "--val-clips", "2", "--batch-size", "4",
        "--lr", "1e-3", "--warmup", "20", "--workers", "0", "--device", device]),
        "train_sal.py --ablation")
    return layout.registers / "ablation.md"


def write_test_labels(layout: Layout) -> Path:
    """The test split that train_lsvq.py held out (the videos of its test predictions; every
    run shares it), as a KoNViD-1k label file for evaluate_vqa.py."""
    tested = pd.read_csv(layout.quality_run(DEMO_MODEL) / "predictions_test.csv",
                         dtype={"video_id": str})["video_id"]
    labels = pd.read_csv(layout.labels, dtype={"flickr_id": str})
    layout.test_labels.parent.mkdir(parents=True, exist_ok=True)
    labels[labels["flickr_id"].isin(tested)].to_csv(layout.test_labels, index=False)
    return layout.test_labels


def drop_ablation_checkpoints(layout: Layout) -> None:
    """Remove the checkpoints of the quality runs other than the demo model once they are
    evaluated (about 80 MB each): their logs and predictions stay, and the demo model's
    checkpoint is the one to score videos with."""
    for name in QUALITY_RUNS:
        if name != DEMO_MODEL:
            (layout.quality_run(name) / BEST).unlink(missing_ok=True)


def evaluate_quality(layout: Layout, name: str, device: str) -> dict:
    """evaluate_vqa.py on the test split: the results-table row of run `name`."""
    maps, _ = QUALITY_RUNS[name]
    labelled = LabelledSet("konvid", layout.test_labels, layout.frames,
                           layout.maps(maps) if maps else None)
    table = evaluate_sets(layout.quality_run(name) / BEST, [labelled], layout.evaluation(name),
                          workers=0, device=device)
    return table.iloc[0].to_dict()


# ----------------------------------------------------------------------------- tables

def results_table(row: dict) -> pd.DataFrame:
    """The paper's table for the demo model on the demo test split."""
    return pd.DataFrame([{**row, "Dataset": "Demo (KoNViD-1k layout), test split"}],
                        columns=RESULT_COLUMNS)


def ablation_table(saliency: dict[str, dict], quality: dict[str, dict]) -> pd.DataFrame:
    """One row per quality run: the maps it read (and that saliency network's validation CC
    and NSS on the saliency set), its weighting a, and its test metrics."""
    rows = []
    for name, (maps, alpha) in QUALITY_RUNS.items():
        scores = saliency.get(maps, {})
        rows.append({"Quality model": name.replace("_", " "), "Saliency network": SALIENCY_NAMES[maps],
                     "a": alpha, "Saliency CC": scores.get("cc", np.nan),
                     "Saliency NSS": scores.get("nss", np.nan),
                     **{column: quality[name][column] for column in QUALITY_METRICS}})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures

def scored_test_clips(layout: Layout, name: str) -> pd.DataFrame:
    """evaluate_vqa.py's test predictions of run `name` (video_id, mos, prediction, mapped)
    with each clip's distortion (kind, region, strength) from the quality set."""
    predictions = pd.read_csv(next(layout.evaluation(name).glob("predictions_*.csv")),
                              dtype={"video_id": str})
    details = pd.read_csv(layout.quality_set / demo_data.QUALITY_DETAILS, dtype={"flickr_id": str})
    return predictions.merge(details[["flickr_id", "kind", "region", "strength"]],
                             left_on="video_id", right_on="flickr_id").drop(columns="flickr_id")


def plot_scatter(layout: Layout, path: Path) -> None:
    """Predicted score against MOS on the test split with the fitted logistic, one panel per
    quality run; colour by distorted region."""
    width, height = figures.SCATTER_SIZE
    figure = figures.new_figure(width * len(QUALITY_RUNS), height)
    for axis, (name, (_, alpha)) in zip(figure.subplots(1, len(QUALITY_RUNS)), QUALITY_RUNS.items()):
        clips = scored_test_clips(layout, name)
        figures.draw_scatter(axis, clips["prediction"], clips["mos"],
                             f"{name.replace('_', ' ')} (a = {alpha:g})",
                             groups=clips["region"] + " distorted")
    figures.save_png(figure, path, dpi=110)


def plot_curves(layout: Layout, path: Path) -> None:
    """Training curves from the stages' log.csv files, each run's best epoch marked: the
    saliency networks' training loss and validation CC (top), the quality networks' training
    loss and validation SRCC (bottom)."""
    figure = figures.new_figure(10, 7)
    top, bottom = figure.subplots(2, 2)
    figures.draw_curves(top, {name: pd.read_csv(layout.saliency_run(name) / LOG)
                              for name in SALIENCY_RUNS},
                        [("saliency: training loss", ["train_loss"]),
                         ("saliency: validation CC", ["val_cc"])])
    figures.draw_curves(bottom, {name.replace("_", " "): pd.read_csv(layout.quality_run(name) / LOG)
                                 for name in QUALITY_RUNS},
                        [("quality: training loss", ["train_loss"]),
                         ("quality: validation SRCC", ["val_srcc"])])
    figures.save_png(figure, path)


def plot_overlays(layout: Layout, path: Path) -> None:
    """inference_sal.py's overlays (register network) of one test clip per distorted region,
    OVERLAY_FRAMES frames each, labelled with the clip's distortion, MOS and prediction."""
    picked = scored_test_clips(layout, DEMO_MODEL).groupby("region", sort=False).head(1)
    folder = inference_sal.overlay_folder(layout.maps("registers"))
    figure = figures.new_figure(2.6 * OVERLAY_FRAMES, 1.9 * len(picked) + 0.4)
    axes = np.atleast_2d(figure.subplots(len(picked), OVERLAY_FRAMES))
    for row, clip in zip(axes, picked.itertuples()):
        names = json.loads((layout.frames / clip.video_id / FRAME_LIST).read_text())["frames"]
        for axis, index in zip(row, np.linspace(0, len(names) - 1, OVERLAY_FRAMES).round().astype(int)):
            image = read_image(folder / clip.video_id / names[index])
            axis.imshow(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        row[0].set_ylabel(f"{clip.kind} on {clip.region}\ns = {clip.strength:.2f}, MOS {clip.mos:.2f}"
                          f"\npredicted {clip.prediction:.2f}", fontsize=8)
    figure.suptitle("Predicted saliency (register network) over test clips: only the salient "
                    "disk moves, its look-alikes stand still", fontsize=10)
    figures.save_png(figure, path, dpi=110)


def plot_register_attention(layout: Layout, seed: int, path: Path) -> None:
    """On a few validation clips of the global-context check: the frame, the ground truth,
    the attention network's prediction, and where each of its registers looks when it reads
    (dagr/registers.py), all blended over the frame."""
    run = run_folder(layout.registers, variants(REGISTERS)["attention"], seed) / BEST
    model = checkpoint_network(run, "saliency")[0]
    videos = [v for v in read_saliency_set("dhf1k", layout.check_set) if v.split == "val"]
    data = evaluation_clips(videos[:ATTENTION_CLIPS], 1, CHECK_SIZE, 1)
    colours = video_categories(layout.check_set / CATEGORY_TABLE)
    rows = 3 + REGISTERS
    figure = figures.new_figure(8, 0.55 * rows * len(data) + 0.6)
    axes = np.atleast_1d(figure.subplots(rows * len(data), 1))
    for index in range(len(data)):
        item = data[index]
        clip = item["frames"][None]  # (1, 3, 1, H, W)
        with torch.inference_mode():
            prediction = probability_maps(model(clip))[0, 0]
        looks = attention_maps(model, clip)[0, :, 0]  # (N, H, W)
        frame = item["frames"][:, 0].permute(1, 2, 0).numpy()
        panels = [("frame", None), ("ground truth", item["maps"][0, 0]),
                  ("prediction", prediction)]
        panels += [(f"register {k + 1}", looks[k]) for k in range(REGISTERS)]
        for axis, (name, heat) in zip(axes[rows * index:], panels):
            axis.imshow(frame, interpolation="nearest")
            if heat is not None:
                axis.imshow(heat.numpy(), cmap="jet", alpha=0.5, interpolation="bilinear")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
        axes[rows * index].set_title(f"video {item['video_id']}: the {colours[item['video_id']]} "
                                     "disk is the odd one out", fontsize=8)
    figure.suptitle("Global-context check: the attention network's registers, where they look",
                    fontsize=9)
    figures.save_png(figure, path, dpi=110)


# ----------------------------------------------------------------------------- the demo

def run_demo(out: str | Path, preset: DemoSize = SIZES[SIZE], seed: int = SEED, device: str = "cpu",
             workers: int = WORKERS) -> dict[str, Path]:
    """Run the whole demo into `out`; returns the files to look at, by name."""
    layout = Layout(Path(out))
    prepare_folder(layout.out)
    (layout.out / MARKER).write_text(json.dumps({"seed": seed, **asdict(preset)}))
    stages = Stages(2 + 2 * len(SALIENCY_RUNS) + len(QUALITY_RUNS) + 3)
    with stages.stage("demo data (demo_data.py)"):
        write_data(layout, preset, seed)
    with stages.stage("frames of the quality clips (extract_frame.py)"):
        extract_frames(layout, preset, workers)
    saliency = {}
    for name in SALIENCY_RUNS:
        with stages.stage(f"saliency network: {SALIENCY_NAMES[name]} (train_sal.py)"):
            saliency[name] = score_saliency(layout, train_saliency(layout, preset, name, seed, device),
                                            device)
    for name in SALIENCY_RUNS:
        with stages.stage(f"saliency maps of the quality clips: {SALIENCY_NAMES[name]} "
                          "(inference_sal.py)"):
            infer_maps(layout, name, device)
    for name, (maps, alpha) in QUALITY_RUNS.items():
        with stages.stage(f"quality network, a = {alpha:g}, maps: {SALIENCY_NAMES[maps]} "
                          "(train_lsvq.py)"):
            train_quality(layout, preset, name, seed, device)
    with stages.stage("the test split (evaluate_vqa.py)"):
        write_test_labels(layout)
        quality = {name: evaluate_quality(layout, name, device) for name in QUALITY_RUNS}
        drop_ablation_checkpoints(layout)
    with stages.stage("the global-context check: the baseline against attention registers "
                      "(train_sal.py --ablation)"):
        registers = register_ablation(layout, preset, seed, device)
    with stages.stage("tables and figures"):
        files = {"results": write_results(results_table(quality[DEMO_MODEL]), layout.out),
                 "ablation": write_results(ablation_table(saliency, quality),
                                           layout.out, "ablation"),
                 "register ablation": registers,
                 "overlays": layout.out / "overlays.png", "scatter": layout.out / "scatter.png",
                 "training curves": layout.out / "training_curves.png",
                 "register attention": layout.out / "register_attention.png",
                 "register states": layout.registers / train_sal.STATE_FIGURE}
        plot_overlays(layout, files["overlays"])
        plot_scatter(layout, files["scatter"])
        plot_curves(layout, files["training curves"])
        plot_register_attention(layout, seed, files["register attention"])
    return files


def summary(files: dict[str, Path], out: Path, seconds: float) -> str:
    """The closing lines: both tables and where everything is."""
    lines = [f"\nDemo finished in {seconds / 60:.1f} min.",
             f"\nDemo model (saliency network with registers, a = {ALPHA:g}) on the test split:",
             files["results"].read_text(), "Ablation (same data, split and seed):",
             files["ablation"].read_text(), "Registers on the global-context check:",
             files["register ablation"].read_text(), "Files:"]
    lines += [f"  {what:<19}{path}" for what, path in files.items()]
    lines.append(f"  {'everything':<19}{out}/ ({', '.join(f'{f}/' for f in STAGE_FOLDERS)})")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--size", choices=sorted(SIZES), default=SIZE,
                        help=f"small: the demo; tiny: the smallest end-to-end run (default: {SIZE})")
    for count in fields(DemoSize):
        if count.type == "int":
            parser.add_argument(f"--{count.name.replace('_', '-')}", type=int, metavar="N",
                                help=f"{count.metadata['help']} (default: the --size preset's)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the data and the training")
    parser.add_argument("--data-only", action="store_true",
                        help="write the demo's synthetic datasets into <out>/data and stop")
    parser.add_argument("--workers", type=int, default=WORKERS, help="frame-extraction processes")
    add_device_argument(parser)
    return parser.parse_args(argv)


def chosen_size(args: argparse.Namespace) -> DemoSize:
    """The --size preset with the counts given as options in place of its own."""
    given = {f.name: getattr(args, f.name) for f in fields(DemoSize)
             if getattr(args, f.name, None) is not None}
    return replace(SIZES[args.size], **given)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_only:
        write_data(Layout(Path(args.out)), chosen_size(args), args.seed)
        return 0
    began = time.perf_counter()
    try:
        files = run_demo(args.out, chosen_size(args), args.seed, args.device, args.workers)
    except (FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(files, Path(args.out), time.perf_counter() - began))
    return 0


if __name__ == "__main__":
    run_script(main)
