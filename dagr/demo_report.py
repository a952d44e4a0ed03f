"""The demo's report: its tables and figures, read from the files its stages wrote.

- `results.md` (.csv, .json): the paper's results table for the demo model on the test split;
- `ablation.md` (.csv, .json): one row per quality run, with the saliency network it read;
- `overlays.png`, `scatter.png`, `training_curves.png`, `register_attention.png`.
The run's folders are those of `dagr.demo_plan.Layout`.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from dagr import ablation, figures
from dagr.checkpoints import checkpoint_network, load_checkpoint
from dagr.datasets import read_saliency_set
from dagr.demo_data import QUALITY_DETAILS
from dagr.demo_plan import (DEMO_MODEL, QUALITY_RUNS, REGISTERS, SALIENCY_LAYOUT,
                            SALIENCY_NAMES, SALIENCY_RUNS, DemoSize, Layout)
from dagr.evaluation import RESULT_COLUMNS, evaluation_clips, write_results
from dagr.images import read_image
from dagr.losses import probability_maps
from dagr.overlays import overlay
from dagr.registers import CATEGORY_TABLE, attention_maps, video_categories
from dagr.training import BEST, LOG
from dataloader import FRAME_LIST
from metrics import QUALITY_METRICS, headline, titles

METRIC_COLUMNS = titles(headline(QUALITY_METRICS))  # PLCC, SRCC, KRCC, RMSE


def write_report(layout: Layout, size: DemoSize) -> dict[str, Path]:
    """Both tables and the four figures of a finished run into `layout.out`. Returns the
    files to look at, by name."""
    quality = quality_rows(layout)
    files = {"results": write_results(results_table(quality[DEMO_MODEL]), layout.out),
             "ablation": write_results(ablation_table(saliency_scores(layout), quality),
                                       layout.out, "ablation"),
             "register ablation": layout.registers / f"{ablation.TABLE}.md",
             "overlays": layout.out / "overlays.png", "scatter": layout.out / "scatter.png",
             "training curves": layout.out / "training_curves.png",
             "register attention": layout.out / "register_attention.png"}
    plot_overlays(layout, files["overlays"])
    plot_scatter(layout, files["scatter"])
    plot_curves(layout, files["training curves"])
    plot_register_attention(layout, size, files["register attention"])
    return files


# ----------------------------------------------------------------------------- tables

def saliency_scores(layout: Layout) -> dict[str, dict[str, float]]:
    """Each saliency run's validation metrics on the global-context check, as its best
    checkpoint records them: {run: {cc, nss, ...}}."""
    return {name: load_checkpoint(layout.saliency_run(name) / BEST, kind="saliency")["metrics"]
            for name in SALIENCY_RUNS}


def quality_rows(layout: Layout) -> dict[str, dict]:
    """Each quality run's row of evaluate_vqa.py's results table on the test split (its CSV
    holds every digit, and reads back to the same numbers): {run: {column: value}}."""
    return {name: pd.read_csv(layout.evaluation(name) / "results.csv").iloc[0].to_dict()
            for name in QUALITY_RUNS}


def results_table(row: dict) -> pd.DataFrame:
    """The paper's table for the demo model on the demo test split."""
    return pd.DataFrame([{**row, "Dataset": "Demo (KoNViD-1k layout), test split"}],
                        columns=RESULT_COLUMNS)


def ablation_table(saliency: dict[str, dict], quality: dict[str, dict]) -> pd.DataFrame:
    """One row per quality run: the maps it read (and that saliency network's validation CC
    and NSS on the global-context check), its weighting a, and its test metrics."""
    rows = []
    for name, (maps, alpha) in QUALITY_RUNS.items():
        scores = saliency.get(maps, {})
        rows.append({"Quality model": name.replace("_", " "), "Saliency network": SALIENCY_NAMES[maps],
                     "a": alpha, "Saliency CC": scores.get("cc", np.nan),
                     "Saliency NSS": scores.get("nss", np.nan),
                     **{column: quality[name][column] for column in METRIC_COLUMNS}})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures

def scored_test_clips(layout: Layout, name: str) -> pd.DataFrame:
    """evaluate_vqa.py's test predictions of run `name` (video_id, mos, prediction, mapped)
    with each clip's distortion (kind, region, strength) from the quality set."""
    predictions = pd.read_csv(next(layout.evaluation(name).glob("predictions_*.csv")),
                              dtype={"video_id": str})
    details = pd.read_csv(layout.quality_set / QUALITY_DETAILS, dtype={"flickr_id": str})
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
    """The register network's maps over one test clip per distorted region, each stored frame,
    drawn as `inference_sal.py --overlay` draws them (dagr.overlays.overlay), labelled
    with the clip's distortion, MOS and prediction. Drawn here for these clips only: overlays
    of every clip, each at least 224 pixels high, would triple the demo's size."""
    picked = scored_test_clips(layout, DEMO_MODEL).groupby("region", sort=False).head(1)
    frames = len(frame_names(layout, picked["video_id"].iloc[0]))
    figure = figures.new_figure(2 + 6 * frames, 1.1 * len(picked) + 0.5)
    axes = figure.subplots(len(picked), frames, squeeze=False)
    for row, clip in zip(axes, picked.itertuples()):
        for axis, name in zip(row, frame_names(layout, clip.video_id)):
            frame = read_image(layout.frames / clip.video_id / name)
            saliency = read_image(layout.maps("registers") / clip.video_id / name,
                                  cv2.IMREAD_GRAYSCALE)
            image = overlay(frame, saliency)
            axis.imshow(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        row[0].set_ylabel(f"{clip.kind} on {clip.region}\ns = {clip.strength:.2f}, MOS {clip.mos:.2f}"
                          f"\npredicted {clip.prediction:.2f}", fontsize=8)
    figure.suptitle("Predicted saliency (register network) over test clips:\nthe disk of the "
                    "odd colour is salient; a decoy is one of its look-alikes", fontsize=10)
    figures.save_png(figure, path, dpi=110)


def frame_names(layout: Layout, video_id: str) -> list[str]:
    """The stored frames of a quality clip, in order (extract_frame.py's frame list)."""
    return json.loads((layout.frames / video_id / FRAME_LIST).read_text())["frames"]


def plot_register_attention(layout: Layout, size: DemoSize, path: Path) -> None:
    """On the first `size.attention_clips` validation clips of the global-context check: the frame, the
    ground truth, the attention network's prediction, and where each of its registers looks
    when it reads (dagr/registers.py), all blended over the frame."""
    model = checkpoint_network(layout.saliency_run("registers") / BEST, "saliency")[0]
    videos = [v for v in read_saliency_set(SALIENCY_LAYOUT, layout.check_set) if v.split == "val"]
    data = evaluation_clips(videos[:size.attention_clips], 1, size.check_size, 1)
    colours = video_categories(layout.check_set / CATEGORY_TABLE)
    rows = 3 + REGISTERS
    figure = figures.new_figure(8, 0.55 * rows * len(data) + 0.6)
    axes = np.atleast_1d(figure.subplots(rows * len(data), 1))
    for index in range(len(data)):
        item = data[index]
        clip = item["frames"][None]  # (1, 3, 1, H, W)
        with torch.inference_mode():
            prediction = probability_maps(model(clip))[0, 0]  # (H, W)
        looks = attention_maps(model, clip)[0, :, 0]  # (N, H, W)
        frame = item["frames"][:, 0].permute(1, 2, 0).numpy()  # (H, W, 3)
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
