"""The dataset registry: every dataset the scripts can read, by its `--dataset` name.

A quality set (`QualitySet`) names its label reader, the columns its label file must have (so
that a file given with the wrong `--dataset` is recognised) and how its rows are titled in
results tables. A saliency set (`SaliencySet`) names its reader and the split validated on.
The readers live in dataloader.py (the official files) and dagr/labels.py (the plain formats);
adding a dataset is one reader plus one entry here (docs/datasets.md shows an example). Every
script takes its `--dataset` choices and their help text from these tables.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

import dataloader
from dagr import gaze_sets
from dagr.labels import (Columns, LabelColumns, LabelFileError, MissingColumns, missing_columns,
                         read_csv_labels, read_labels_txt)
from dataloader import SaliencyVideo


@dataclass(frozen=True)
class QualitySet:
    """A labelled quality dataset. `reader(labels, video_root)` returns `video_id, path, mos,
    split`; a plain format's reader also takes the LabelColumns of --video-column and friends.
    `labels` says which file to give (for --help); `columns` are the columns its CSV label file
    needs (empty for other formats), `suffix` its label file's suffix when it is not a CSV."""
    name: str
    title: str
    reader: Callable[..., pd.DataFrame]
    labels: str
    columns: Columns = ()
    suffix: str = ".csv"
    plain: bool = False


@dataclass(frozen=True)
class SaliencySet:
    """An eye-tracking dataset. `reader(root)` returns its annotated videos (or still images:
    `still`), each with its split; `validation` is the split a training run validates on. A set
    without an official split reads as split `all` and is dealt into FOLDS folds."""
    name: str
    title: str
    reader: Callable[[Path], list[SaliencyVideo]]
    layout: str
    validation: str = "val"
    still: bool = False


FOLDS = 5      # a set without an official split: fold k validates, the other folds train
FOLD_SEED = 0  # the folds and --train-limit's choice are the same for every training seed


QUALITY_SETS = {entry.name: entry for entry in (
    QualitySet("lsvq", "LSVQ", dataloader.read_lsvq,
               "labels_train_test.csv or labels_test_1080p.csv", dataloader.LSVQ_COLUMNS),
    QualitySet("konvid", "KoNViD-1k", dataloader.read_konvid,
               "KoNViD_1k_mos.csv or KoNViD_1k_attributes.csv", dataloader.KONVID_COLUMNS),
    QualitySet("livevqc", "LIVE-VQC", dataloader.read_livevqc, "data.mat", suffix=".mat"),
    QualitySet("youtube-ugc", "YouTube-UGC", dataloader.read_youtube_ugc,
               "original_videos_MOS_for_YouTube_UGC_dataset.xlsx (or a CSV export of it)",
               dataloader.YOUTUBE_UGC_COLUMNS),
    QualitySet("csv", "Labelled set", read_csv_labels,
               "any CSV, TSV or XLSX table with a video and a score column", plain=True),
    QualitySet("labels-txt", "Labelled set", read_labels_txt,
               "DOVER / FAST-VQA labels.txt (path, duration, fps, score lines)", plain=True),
)}

SALIENCY_SETS = {entry.name: entry for entry in (
    SaliencySet("dhf1k", "DHF1K", dataloader.read_dhf1k,
                "video/001.AVI + annotation/0001/{maps,fixation}/0001.png; trains on 1-600, "
                "validates on 601-700"),
    SaliencySet("diem", "DIEM", dataloader.read_diem,
                "STAViS layout: video_frames/DIEM/, annotations/DIEM/, fold_lists/; trains on "
                "the train fold, validates on the test fold", validation="test"),
    SaliencySet("salicon", "SALICON", gaze_sets.read_salicon,
                "images/{train,val}/COCO_*.jpg + fixations/fixations_{train,val}2014.json "
                "(COCO-style fixations); official train/val split", still=True),
    SaliencySet("mit1003", "MIT1003", gaze_sets.read_mit1003,
                "ALLSTIMULI/<name>.jpeg + ALLFIXATIONMAPS/<name>_fixMap.jpg, _fixPts.jpg "
                "(or in ALLFIXATIONS/); 5 folds", still=True),
    SaliencySet("cat2000", "CAT2000", gaze_sets.read_cat2000,
                "trainSet/Stimuli/<category>/<name>.jpg + FIXATIONMAPS/<category>/<name>.jpg "
                "+ FIXATIONLOCS/<category>/<name>.mat; 5 folds", still=True),
    SaliencySet("sun500", "SUN500", gaze_sets.read_sun500,
                "stimuli/001.jpg + tidy/fixations.mat (raw fixations); 5 folds", still=True),
    SaliencySet("fixation-table", "Fixation table", gaze_sets.read_fixation_table,
                "a CSV of image, x, y (optional observer, duration, split), as --root or "
                "<root>/fixations.csv; images relative to it", still=True),
)}

SPLIT_TITLES = {"test_1080p": "-1080p"}  # a test split's suffix in results tables


def quality_help() -> str:
    """`--dataset` help text for quality sets: each name and the label file it reads."""
    return "label format of --labels: " + "; ".join(
        f"{entry.name}: {entry.labels}" for entry in QUALITY_SETS.values())


def saliency_help() -> str:
    """`--dataset` help text for saliency sets: each name and its layout."""
    return "; ".join(f"{entry.name}: {entry.layout}" for entry in SALIENCY_SETS.values())


def read_table(dataset: str, labels: str | Path, video_root: str | Path | None = None,
               columns: LabelColumns = LabelColumns()) -> pd.DataFrame:
    """`video_id, path, mos, split` of a quality set's label file. A LabelFileError names the
    file and, when the file is another registered set's, the --dataset to use instead."""
    entry = QUALITY_SETS.get(dataset)
    if entry is None:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(QUALITY_SETS)}")
    try:
        if entry.plain:
            return entry.reader(labels, video_root, columns)
        return entry.reader(labels, video_root)
    except LabelFileError as err:
        hint = wrong_dataset_hint(Path(labels), dataset, err)
        if not hint:
            raise
        raise LabelFileError(f"{err}{hint}") from err


def wrong_dataset_hint(labels: Path, dataset: str, err: LabelFileError) -> str:
    """"; FILE has the columns of D (...): use --dataset D" for the first other set whose
    label columns the file has, or whose label file has its suffix; "" when none fits."""
    names = err.columns if isinstance(err, MissingColumns) else _csv_columns(labels)
    for entry in QUALITY_SETS.values():
        if entry.name == dataset or entry.plain:
            continue
        if entry.columns and names and not missing_columns(names, entry.columns):
            shown = ", ".join(next(n for n in (c if isinstance(c, tuple) else (c,)) if n in names)
                              for c in entry.columns)
            return (f"; {labels.name} has the columns of {entry.name} ({shown}): use "
                    f"--dataset {entry.name}")
        if entry.suffix != ".csv" and labels.suffix.lower() == entry.suffix:
            return (f"; {labels.name} is a {entry.suffix} file, as {entry.title}'s labels are: "
                    f"use --dataset {entry.name}")
    return ""


def _csv_columns(path: Path) -> list[str]:
    """The header of a file that reads as a CSV, else []."""
    try:
        return [str(c) for c in pd.read_csv(path, nrows=1).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError,
            OSError):
        return []


def set_title(dataset: str, split: str) -> str:
    """Row name of a test set in results tables: `LSVQ`, `LSVQ-1080p`, `KoNViD-1k`, ..."""
    return QUALITY_SETS[dataset].title + SPLIT_TITLES.get(split, "")


def read_saliency_set(dataset: str, root: str | Path) -> list[SaliencyVideo]:
    """Every annotated video of a saliency set, each with its split."""
    if dataset not in SALIENCY_SETS:
        raise ValueError(f"unknown saliency dataset {dataset!r}; choose from "
                         f"{', '.join(SALIENCY_SETS)}")
    return SALIENCY_SETS[dataset].reader(Path(root))


def saliency_videos(dataset: str, root: str | Path, split: str, fold: int = 0,
                    limit: int = 0) -> list[SaliencyVideo]:
    """The annotated videos of `split` ('train', 'val' or 'test'; 'val' is the set's
    validation split, which for DIEM is its test fold). A set without an official split
    validates on fold `fold` of FOLDS and trains on the others. `limit` > 0 keeps that many
    training videos, a seeded choice in which a smaller limit's videos are also a larger one's.
    ValueError when there are none, or for a fold other than 0 of a set with its own split."""
    videos = with_folds(read_saliency_set(dataset, root), fold)
    if fold != 0 and not folded(videos):
        raise ValueError(f"{dataset} has an official split: --fold and --cross-validate are for "
                         "sets without one")
    entry = SALIENCY_SETS[dataset]
    name = entry.validation if split == "val" else split
    videos = [video for video in videos if video.split == name]
    if not videos:
        raise ValueError(f"{root}: no annotated {dataset} videos in split {name!r}")
    return seeded_order(videos)[:limit] if limit > 0 and split == "train" else videos


def folded(videos: list[SaliencyVideo]) -> bool:
    """Whether `videos` (as `with_folds` returns them) were dealt into folds: their set has
    no official split."""
    return any(video.fold is not None for video in videos)


def seeded_order(videos: list[SaliencyVideo]) -> list[SaliencyVideo]:
    """`videos` sorted by id, then shuffled with FOLD_SEED: the same order on every run."""
    ordered = sorted(videos, key=lambda video: video.video_id)
    return [ordered[i] for i in np.random.default_rng(FOLD_SEED).permutation(len(ordered))]


def with_folds(videos: list[SaliencyVideo], fold: int) -> list[SaliencyVideo]:
    """`videos`, each unsplit one (split `all`) replaced by a copy with its `fold` of FOLDS
    and split `val` when that is `fold`, else `train`."""
    if not 0 <= fold < FOLDS:
        raise ValueError(f"fold {fold} does not exist: choose 0 to {FOLDS - 1}")
    unsplit = seeded_order([video for video in videos if video.split == gaze_sets.UNSPLIT])
    folds = {video.video_id: i % FOLDS for i, video in enumerate(unsplit)}
    return [replace(video, fold=folds[video.video_id],
                    split="val" if folds[video.video_id] == fold else "train")
            if video.video_id in folds and video.split == gaze_sets.UNSPLIT else video
            for video in videos]
