"""Eye-tracking sets on still images, each read in its publisher's own layout into
`SaliencyVideo`s of one frame (dataloader.py), so that train_sal.py trains and validates on
them as on video. Sets that publish fixation points give `points`, from which dagr/gaze.py
makes the maps by one rule; sets that publish maps give `maps` (and `fixations` when they ship
fixation maps too).

Sets without an official split come with split `all`; dagr/datasets.py deals them into folds.
Bad files and missing images are reported in one line each (dagr.labels.report) and left out.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from dagr.labels import (LabelFileError, read_csv_file, report, require_columns, shown_names,
                         splits_of)
from dataloader import FIXATION_VARIABLES, MAT_ERRORS, SaliencyVideo, load_mat

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
UNSPLIT = "all"  # the split of a set that publishes none (dagr/datasets.py folds it)
TABLE = "fixations.csv"  # a fixation table's name inside the folder given as --root
TABLE_COLUMNS = ["image", "x", "y"]  # also optional: observer, duration, split
SALICON_FILES = {"train": "fixations_train2014.json", "val": "fixations_val2014.json"}


def still(image_id: str, image: Path, split: str, *, points: np.ndarray | None = None,
          density: Path | None = None, fixations: Path | None = None) -> SaliencyVideo:
    """One annotated image as a video of one frame."""
    return SaliencyVideo(
        video_id=image_id, split=split, maps=[density] if density else [],
        fixations=[fixations] if fixations else [], frame_numbers=[0], frames=[image],
        points=None if points is None else [np.asarray(points, np.float64).reshape(-1, 2)])


def _left_out(where: Path, what: str, names: list[str]) -> None:
    if names:
        report(f"{where}: {len(names)} {what} left out ({shown_names(names)})")


def _image_files(folder: Path) -> dict[str, Path]:
    """{stem: path} of the image files directly in `folder`, sorted by name (subfolders are
    not searched); FileNotFoundError naming the folder when it is not there."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    return {path.stem: path for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS}


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
        points = _observer_points(observers)
        if not image.is_file() or not points:
            unusable.append(image.name)
            continue
        out.append(still(image.stem, image, UNSPLIT, points=np.concatenate([p[:, :2] for p in points])))
    _left_out(root, "image(s) without a stimulus file or readable fixations", unusable)
    return out


def _observer_points(observers: np.ndarray) -> list[np.ndarray]:
    """The (n, 2) x, y of each observer who saw the image (their non-empty cells); [] when a
    cell is not a numeric array of at least two columns."""
    try:
        points = [np.asarray(cell, dtype=np.float64) for cell in observers if np.size(cell)]
    except (TypeError, ValueError):
        return []
    return [] if any(p.ndim != 2 or p.shape[1] < 2 for p in points) else points


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
    split = pd.Series(UNSPLIT, index=table.index, dtype=object)  # no split: dealt into folds
    if "split" in table:
        given = table["split"].notna()
        split[given] = splits_of(table.loc[given, "split"], path)
    table = table.assign(split=split)
    out, missing, torn = [], [], []
    for name, rows in table.groupby(table["image"].astype(str), sort=True):
        image = path.parent / name
        if not image.is_file():
            missing.append(name)
        elif rows["split"].nunique() > 1:
            torn.append(name)
        else:
            out.append(still(Path(name).with_suffix("").as_posix(), image, rows["split"].iloc[0],
                             points=rows[["x", "y"]].to_numpy(dtype=np.float64)))
    _left_out(path, "image(s) not found", missing)
    _left_out(path, "image(s) whose rows name different splits", torn)
    return out


# ----------------------------------------------------------------------------- SALICON

def read_salicon(root: str | Path) -> list[SaliencyVideo]:
    """SALICON: `images/{train,val}/COCO_train2014_000000000009.jpg` ... and the COCO-style
    `fixations/fixations_{train,val}2014.json` (or both directly under `root`). Returns the
    images of both files, split `train` and `val` (the official split), each with the
    fixations of all its workers as points."""
    root = Path(root)
    return [video for split, name in SALICON_FILES.items()
            for video in _salicon_split(_salicon_file(root, name), root / "images" / split, split)]


def _salicon_file(root: Path, name: str) -> Path:
    """`root`/fixations/`name`, else `root`/`name`; FileNotFoundError when neither is there."""
    for path in (root / "fixations" / name, root / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"{root / 'fixations' / name}: not found (nor {root / name})")


def _salicon_split(path: Path, folder: Path, split: str) -> list[SaliencyVideo]:
    """The images of one SALICON fixations file found in `folder`, each with its points.
    Malformed entries, annotations of unknown images, and images that are missing or that no
    worker annotated are reported and left out."""
    images, annotations = _coco_lists(path)
    names = {entry["id"]: entry["file_name"] for entry in images if _coco_image(entry)}
    bad = [f"images[{i}]" for i, entry in enumerate(images) if not _coco_image(entry)]
    points, unknown = {}, []
    for i, annotation in enumerate(annotations):
        found = _salicon_points(annotation)
        if found is None:
            bad.append(f"annotations[{i}]")
        elif found[0] not in names:
            unknown.append(str(found[0]))
        else:
            points.setdefault(found[0], []).append(found[1])
    out, missing = [], []
    for image_id, name in sorted(names.items(), key=lambda item: item[1]):
        if not (folder / name).is_file() or image_id not in points:
            missing.append(name)
            continue
        out.append(still(Path(name).stem, folder / name, split,
                         points=np.concatenate(points[image_id])))
    _left_out(path, "malformed entry(ies)", bad)
    _left_out(path, "annotation(s) of unknown image ids", unknown)
    _left_out(folder, "image(s) missing or never annotated", missing)
    return out


def _coco_lists(path: Path) -> tuple[list, list]:
    """The `images` and `annotations` lists of a COCO-style JSON file; LabelFileError naming
    it when it is not JSON or lacks them."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise LabelFileError(f"{path}: not a readable JSON file ({err})") from err
    if not (isinstance(data, dict)
            and all(isinstance(data.get(key), list) for key in ("images", "annotations"))):
        raise LabelFileError(f"{path}: needs the COCO lists 'images' and 'annotations'")
    return data["images"], data["annotations"]


def _coco_image(entry: object) -> bool:
    """Whether `entry` of a COCO `images` list has a usable `id` and `file_name`."""
    return (isinstance(entry, dict) and isinstance(entry.get("id"), (int, str))
            and isinstance(entry.get("file_name"), str))


def _salicon_points(annotation: object) -> tuple[int | str, np.ndarray] | None:
    """(image id, (N, 2) 0-based x, y) of one worker's SALICON annotation, whose `fixations`
    are 1-based [row, col] pixels (the SALICON API's buildFixMap); None when malformed."""
    try:
        image_id = annotation["image_id"]
        fixations = np.asarray(annotation["fixations"], dtype=np.float64)
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    if fixations.size == 0:  # a worker without fixations on this image
        fixations = fixations.reshape(0, 2)
    if (not isinstance(image_id, (int, str)) or fixations.ndim != 2 or fixations.shape[1] != 2
            or not np.isfinite(fixations).all()):
        return None
    return image_id, fixations[:, ::-1] - 1


# ----------------------------------------------------------------------------- MIT1003

def read_mit1003(root: str | Path) -> list[SaliencyVideo]:
    """MIT1003 (Judd et al.): `ALLSTIMULI/<name>.jpeg`, its density map
    `ALLFIXATIONMAPS/<name>_fixMap.jpg` and its fixation points as a binary map
    `<name>_fixPts.jpg`, in `ALLFIXATIONS/` when that folder is there, else beside the maps.
    Returns every image with its maps, split `all` (no official split). A copy without any
    `_fixPts` file gives density maps only: one note says so, and NSS, AUC-J and s-AUC are nan.
    Images without their maps are reported and left out."""
    root = Path(root)
    stimuli = _image_files(root / "ALLSTIMULI")
    maps = root / "ALLFIXATIONMAPS"
    if not maps.is_dir():
        raise FileNotFoundError(f"{maps}: folder not found")
    points = root / "ALLFIXATIONS" if (root / "ALLFIXATIONS").is_dir() else maps
    with_points = any(points.glob("*_fixPts.jpg"))
    if not with_points:  # a copy as published, not a data problem: the exit status stays 0
        print(f"note: {root}: MIT1003 without fixation points (no *_fixPts files): NSS, AUC-J "
              "and s-AUC are left out", file=sys.stderr)
    out, unusable = [], []
    for name, image in stimuli.items():
        density, fixations = maps / f"{name}_fixMap.jpg", points / f"{name}_fixPts.jpg"
        if not density.is_file() or (with_points and not fixations.is_file()):
            unusable.append(image.name)
            continue
        out.append(still(name, image, UNSPLIT, density=density,
                         fixations=fixations if with_points else None))
    _left_out(root, "image(s) without a _fixMap density map"
              + (" or _fixPts points" if with_points else ""), unusable)
    return out


# ----------------------------------------------------------------------------- CAT2000

def read_cat2000(root: str | Path) -> list[SaliencyVideo]:
    """CAT2000's training set (`root` is the `trainSet` folder or its parent):
    `Stimuli/<category>/<name>.jpg`, its density map `FIXATIONMAPS/<category>/<name>.jpg` and
    its fixations `FIXATIONLOCS/<category>/<name>.mat` (variable `fixLocs`, a binary map of
    the image's size). Returns every image with both as `<category>/<name>`, split `all` (no
    official split); images without them, or with an unreadable .mat, are reported and left
    out."""
    root = Path(root)
    base = root / "trainSet" if (root / "trainSet").is_dir() else root
    stimuli = base / "Stimuli"
    if not stimuli.is_dir():
        raise FileNotFoundError(f"{stimuli}: folder not found (CAT2000's trainSet layout)")
    out, unusable = [], []
    for category in sorted(path.name for path in stimuli.iterdir() if path.is_dir()):
        # only the files of a category: the Output folders some copies add there are not images
        for name, image in _image_files(stimuli / category).items():
            density = base / "FIXATIONMAPS" / category / f"{name}.jpg"
            locations = base / "FIXATIONLOCS" / category / f"{name}.mat"
            if not density.is_file() or not _fixation_mat(locations):
                unusable.append(f"{category}/{name}")
                continue
            out.append(still(f"{category}/{name}", image, UNSPLIT, density=density,
                             fixations=locations))
    _left_out(base, "image(s) without a FIXATIONMAPS map or a readable FIXATIONLOCS .mat",
              unusable)
    return out


def _fixation_mat(path: Path) -> bool:
    """Whether `path` is a MATLAB file with a fixation map that dataloader.load_fixations
    reads; only the file's header is read, so that checking 2000 files stays quick."""
    try:
        return any(name in FIXATION_VARIABLES for name, _, _ in scipy.io.whosmat(path))
    except MAT_ERRORS:
        return False
