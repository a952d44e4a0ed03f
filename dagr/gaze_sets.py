"""Eye-tracking sets on still images, each read in its publisher's own layout into
`SaliencyVideo`s of one frame (dataloader.py), so that train_sal.py trains and validates on
them as on video. Sets that publish fixation points give `points`, from which dagr/gaze.py
makes the maps by one rule; sets that publish maps give `maps` (and `fixations` when they ship
fixation maps too).

Sets without an official split come with split `all`; dagr/datasets.py deals them into folds.
Bad files and missing images are reported in one line each (dagr.labels.report) and left out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from dagr.labels import LabelFileError, read_csv_file, report, require_columns, shown_names
from dataloader import SaliencyVideo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
UNSPLIT = "all"  # the split of a set that publishes none (dagr/datasets.py folds it)
TABLE = "fixations.csv"  # a fixation table's name inside the folder given as --root
TABLE_COLUMNS = ["image", "x", "y"]  # also optional: observer, duration, split


def still(image_id: str, image: Path, split: str, *, points: np.ndarray | None = None,
          density: Path | None = None, fixations: Path | None = None) -> SaliencyVideo:
    """One annotated image as a video of one frame."""
    return SaliencyVideo(
        video_id=image_id, split=split, maps=[density] if density else [],
        fixations=[fixations] if fixations else [], frame_numbers=[0], frames=[image],
        points=None if points is None else [np.asarray(points, np.float64).reshape(-1, 2)])


def load_mat(path: Path) -> dict:
    """The variables of a MATLAB file; LabelFileError naming it when it cannot be read."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, IndexError, NotImplementedError) as err:
        raise LabelFileError(f"{path}: not a readable MATLAB file ({err})") from err


def _left_out(where: Path, what: str, names: list[str]) -> None:
    if names:
        report(f"{where}: {len(names)} {what} left out ({shown_names(names)})")


# ----------------------------------------------------------------------------- SUN500

def read_sun500(root: str | Path) -> list[SaliencyVideo]:
    """SUN500 (the NUS VIP lab's Scene Saliency set): `stimuli/001.jpg` ... `500.jpg` and
    `tidy/fixations.mat`, whose variable `fixations` is a cell array with a row per image (in
    file order) and a cell per observer, each an (n, 4) array of x, y (the image's pixels),
    onset and duration (seconds); an empty cell is an observer who did not see the image."""
    root = Path(root)
    cells = load_mat(root / "tidy" / "fixations.mat").get("fixations")
    if not isinstance(cells, np.ndarray) or cells.dtype != object or cells.ndim != 2:
        raise LabelFileError(f"{root / 'tidy' / 'fixations.mat'}: needs a cell array "
                             "'fixations' with a row per image and a cell per observer")
    out, unusable = [], []
    for row, observers in enumerate(cells, start=1):
        image = root / "stimuli" / f"{row:03d}.jpg"
        points = [np.asarray(cell, dtype=np.float64) for cell in observers if np.size(cell)]
        if not image.is_file() or not points or any(p.ndim != 2 or p.shape[1] < 2 for p in points):
            unusable.append(image.name)
            continue
        out.append(still(image.stem, image, UNSPLIT, points=np.concatenate([p[:, :2] for p in points])))
    _left_out(root, "image(s) without a stimulus file or readable fixations", unusable)
    return out


# ----------------------------------------------------------------------------- fixation table

def table_file(root: str | Path) -> Path:
    """The fixation table: `root` itself when it is a file, else `root`/fixations.csv."""
    root = Path(root)
    return root if root.suffix.lower() == ".csv" else root / TABLE


def read_fixation_table(root: str | Path) -> list[SaliencyVideo]:
    """A fixation table: a CSV with a row per fixation and the columns `image` (a path
    relative to the table's folder, or absolute), `x`, `y` (0-based pixels of the image),
    optionally `observer` and `duration` (kept by nobody yet: every fixation counts once) and
    `split` (train / val / test; without it the images are dealt into folds). `root` is the
    CSV file or a folder holding `fixations.csv`."""
    path = table_file(root)
    table = read_csv_file(path)
    require_columns(table, TABLE_COLUMNS, path)
    xy = table[["x", "y"]].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(xy.to_numpy(dtype=float)).all(axis=1) | table["image"].isna()
    if bad.any():
        report(f"{path}: {int(bad.sum())} row(s) without a numeric x and y or an image left "
               f"out (rows {shown_names([str(i + 2) for i in np.flatnonzero(bad)])})")
    table = table.assign(x=xy["x"], y=xy["y"])[~bad]
    out, missing = [], []
    for name, rows in table.groupby(table["image"].astype(str), sort=True):
        image = path.parent / name
        if not image.is_file():
            missing.append(name)
            continue
        split = str(rows["split"].iloc[0]).strip().lower() if "split" in rows else UNSPLIT
        out.append(still(Path(name).with_suffix("").as_posix(), image, split,
                         points=rows[["x", "y"]].to_numpy(dtype=np.float64)))
    _left_out(path, "image(s) not found", missing)
    return out
