"""Dataset readers and torch Datasets (design.md, sections 2 and 3).

Quality sets (LSVQ, KoNViD-1k, LIVE-VQC, YouTube-UGC): each `read_<set>(labels, video_root)`
reads the publisher's own label file into one table with the columns `video_id, path, mos,
split` (dagr/labels.py cleans it the same way for every set). Saliency sets (DHF1K, DIEM):
each `read_<set>(root)` gives one `SaliencyVideo` per annotated video. dagr/datasets.py, the
dataset registry, names every reader: adding a dataset is one reader here plus one entry there
(docs/datasets.md shows how).

`VQAClipDataset` serves the stored frames of `extract_frame.py` with their saliency maps;
`SaliencyClipDataset` serves clips of frames with their ground-truth maps and fixations.

Problems in the data (a missing video, a NaN score, a repeated id, a missing saliency map) are
reported on stderr with the file they come from, and those rows are left out: never replaced by
another sample.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import scipy.io
import torch
from torch.utils.data import Dataset

from dagr.labels import (LabelFileError, finish_table, read_csv_file, report, require_columns,
                         shown_names)
from dagr.frames import FRAME_LIST, frame_files
from dagr.gaze import density_map, fixation_map
from dagr.images import load_map_levels, load_rgb, read_image, rgb_at
from dagr.paper import FRAME_SIZE
from dagr.video_io import read_frames_at

# the columns each CSV-readable quality set's label file needs (a tuple: alternative names)
LSVQ_COLUMNS = ["name", "mos"]
KONVID_COLUMNS = ["flickr_id", ("mos", "MOS")]
YOUTUBE_UGC_COLUMNS = ["vid", "MOS full"]
FIXATION_VARIABLES = ("eyeMap", "fixLocs")  # the binary map in DIEM's and CAT2000's .mat files
# what scipy.io.loadmat raises for a file that is not a readable MATLAB file
MAT_ERRORS = (ValueError, TypeError, OSError, IndexError, NotImplementedError,
              scipy.io.matlab.MatReadError)


# ----------------------------------------------------------------------------- quality sets

def read_lsvq(labels: str | Path, video_root: str | Path | None = None) -> pd.DataFrame:
    """LSVQ `labels_train_test.csv` / `labels_test_1080p.csv` (or the `LSVQ_whole_*.csv`
    re-split). Split: `train` / `test` from `is_test`; a file without `is_test` is `test_1080p`.
    `name` has no extension: `yfcc-batch1/722` is `<root>/yfcc-batch1/722.mp4`."""
    labels = Path(labels)
    raw = read_csv_file(labels)
    require_columns(raw, LSVQ_COLUMNS, labels)
    if "is_test" in raw.columns:
        is_test = raw["is_test"].astype(str).str.strip().str.lower().isin(["true", "1", "t", "yes"])
        split = np.where(is_test, "test", "train")
    else:
        split = "test_1080p"
    table = pd.DataFrame({"video_id": raw["name"], "mos": raw["mos"], "split": split})
    return finish_table(table, labels, video_root)


def read_konvid(labels: str | Path, video_root: str | Path | None = None) -> pd.DataFrame:
    """KoNViD-1k `KoNViD_1k_mos.csv` (`flickr_id,mos`) or `KoNViD_1k_attributes.csv`
    (`flickr_id`, `MOS`, ...; its `file_name` holds old names, so the join is on flickr_id)."""
    labels = Path(labels)
    raw = read_csv_file(labels)
    require_columns(raw, KONVID_COLUMNS, labels)
    score = "mos" if "mos" in raw.columns else "MOS"
    table = pd.DataFrame({"video_id": raw["flickr_id"], "mos": raw[score], "split": "all"})
    return finish_table(table, labels, video_root)


def read_livevqc(labels: str | Path, video_root: str | Path | None = None) -> pd.DataFrame:
    """LIVE-VQC `data.mat`: `video_list` (cell array of file names such as `A001.mp4`), `mos`."""
    labels = Path(labels)
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: label file not found")
    mat = load_mat(labels)
    fields = [k for k in mat if not k.startswith("__")]
    if "video_list" not in mat or "mos" not in mat:
        raise LabelFileError(f"{labels}: needs the variables 'video_list' and 'mos'; "
                             f"it has: {', '.join(fields)}")
    names = [str(np.asarray(cell).ravel()[0]) for cell in np.asarray(mat["video_list"]).ravel()]
    mos = np.asarray(mat["mos"], dtype=float).ravel()
    if len(names) != len(mos):
        raise LabelFileError(f"{labels}: {len(names)} names in video_list but {len(mos)} mos values")
    table = pd.DataFrame({"video_id": [Path(n).stem for n in names], "mos": mos, "split": "all"})
    return finish_table(table, labels, video_root)


def _youtube_file(vid: str, index: dict[str, Path]) -> Path | None:
    """Originals are `<vid>.mkv`; the common H.264 transcodes `<vid>_crf_10_ss_00_t_20.0.mp4`."""
    if vid in index:
        return index[vid]
    transcodes = [path for key, path in index.items() if key.startswith(vid + "_crf_")]
    return transcodes[0] if transcodes else None


def read_youtube_ugc(labels: str | Path, video_root: str | Path | None = None) -> pd.DataFrame:
    """YouTube-UGC `original_videos_MOS_for_YouTube_UGC_dataset.xlsx` (sheet `MOS`) or a CSV
    export of that sheet: columns `vid`, `MOS full` (also `category`, `MOS chunk..`)."""
    labels = Path(labels)
    if labels.suffix.lower() in (".xlsx", ".xls"):
        if not labels.is_file():
            raise FileNotFoundError(f"{labels}: label file not found")
        try:
            sheets = pd.read_excel(labels, sheet_name=None)
        except Exception as err:  # openpyxl raises many kinds for a damaged workbook
            raise LabelFileError(f"{labels}: not a readable Excel workbook ({err})") from err
        raw = sheets.get("MOS", next(iter(sheets.values())))
    else:
        raw = read_csv_file(labels)
    raw.columns = [str(c).strip() for c in raw.columns]
    require_columns(raw, YOUTUBE_UGC_COLUMNS, labels)
    table = pd.DataFrame({"video_id": raw["vid"], "mos": raw["MOS full"],
                          "split": raw["category"] if "category" in raw.columns else "all"})
    table = table[table["video_id"].notna()]
    return finish_table(table, labels, video_root, _youtube_file)


# ----------------------------------------------------------------------------- saliency sets

@dataclass
class SaliencyVideo:
    """One annotated video, or a still image (a video of one frame). Frame i of the clip is
    `frames[i]` (an image file) or frame `frame_numbers[i]` (0-based) of `video`. Its
    annotation: `maps[i]`, a density map file, and `fixations[i]`, a fixation map file; or,
    from a set that publishes fixation points, `points[i]` ((N, 2) x, y in the frame's pixels),
    from which dagr/gaze.py makes the fixation map and, when `maps` is empty, the density map.
    A set that ships maps only leaves `fixations` empty and `points` None: its fixation
    metrics (NSS, AUC-J, s-AUC) are then nan."""
    video_id: str
    split: str
    maps: list[Path]
    fixations: list[Path]
    frame_numbers: list[int]
    frames: list[Path] | None = None
    video: Path | None = None
    points: list[np.ndarray] | None = field(default=None, repr=False)
    fold: int | None = None  # of a set without an official split (dagr/datasets.py)

    def __len__(self) -> int:
        return len(self.frame_numbers)


def _numbered(folder: Path, pattern: str) -> dict[int, Path]:
    """{number: path} for the files of `folder` whose name matches `pattern` (one group)."""
    found = {}
    for path in folder.glob("*"):
        match = re.fullmatch(pattern, path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def dhf1k_split(number: int) -> str:
    """DHF1K's official split: 1-600 train, 601-700 validation, 701-1000 test (hidden)."""
    return "train" if number <= 600 else "val" if number <= 700 else "test"


def read_dhf1k(root: str | Path) -> list[SaliencyVideo]:
    """DHF1K: `video/001.AVI` with `annotation/0001/maps/0001.png` (continuous density) and
    `annotation/0001/fixation/0001.png` (binary points); frame files are 1-based. Frames come
    from `annotation/0001/images/0001.png` when extracted there, else from the video."""
    root = Path(root)
    annotation = root / "annotation"
    if not annotation.is_dir():
        raise FileNotFoundError(f"{root}: no 'annotation' folder (DHF1K layout expected)")
    videos = {int(p.stem): p for p in (root / "video").glob("*") if p.stem.isdigit()} \
        if (root / "video").is_dir() else {}
    out, unusable = [], []
    for folder in sorted(p for p in annotation.iterdir() if p.is_dir() and p.name.isdigit()):
        number = int(folder.name)
        maps = _numbered(folder / "maps", r"(\d+)\.png")
        fixations = _numbered(folder / "fixation", r"(\d+)\.png")
        images = _numbered(folder / "images", r"(\d+)\.(?:png|jpg)")
        keys = sorted(set(maps) & set(fixations) & (set(images) if images else set(maps)))
        if not keys or (not images and number not in videos):
            unusable.append(folder.name)
            continue
        out.append(SaliencyVideo(
            video_id=folder.name, split=dhf1k_split(number),
            maps=[maps[k] for k in keys], fixations=[fixations[k] for k in keys],
            frame_numbers=[k - 1 for k in keys],
            frames=[images[k] for k in keys] if images else None,
            video=None if images else videos[number]))
    if unusable:
        report(f"{annotation}: {len(unusable)} folder(s) without maps, fixations or frames "
               f"left out ({shown_names(unusable)})")
    return out


def read_diem(root: str | Path) -> list[SaliencyVideo]:
    """DIEM in the STAViS layout: `video_frames/DIEM/<name>/img_00001.jpg`,
    `annotations/DIEM/<name>/maps/eyeMap_00001.jpg`, `annotations/DIEM/<name>/fixMap_00001.mat`
    (variable `eyeMap`), splits from `fold_lists/DIEM_list_{train,test}_fps.txt` (the first
    word of a line is the video name). Frames whose map is all zero carry no gaze: skipped."""
    root = Path(root)
    splits = {}
    for split, name in (("train", "DIEM_list_train_fps.txt"), ("test", "DIEM_list_test_fps.txt")):
        listing = root / "fold_lists" / name
        if not listing.is_file():
            raise FileNotFoundError(f"{listing}: DIEM fold list not found")
        for line in listing.read_text().splitlines():
            if line.strip():
                splits[line.split()[0]] = split
    out, unusable = [], []
    for name, split in splits.items():
        frames = _numbered(root / "video_frames" / "DIEM" / name, r"img_(\d+)\.(?:jpg|png)")
        notes = root / "annotations" / "DIEM" / name
        maps = _numbered(notes / "maps", r"eyeMap_(\d+)\.(?:jpg|png)")
        fixations = _numbered(notes, r"fixMap_(\d+)\.mat")
        keys = [k for k in sorted(set(frames) & set(maps) & set(fixations))
                if _load_gray(maps[k]).max() > 0]
        if not keys:
            unusable.append(name)
            continue
        out.append(SaliencyVideo(
            video_id=name, split=split, maps=[maps[k] for k in keys],
            fixations=[fixations[k] for k in keys], frame_numbers=[k - 1 for k in keys],
            frames=[frames[k] for k in keys]))
    if unusable:
        report(f"{root}: {len(unusable)} DIEM video(s) listed in the folds without frames and "
               f"annotations left out ({shown_names(unusable)})")
    return out


def load_mat(path: Path) -> dict:
    """The variables of a MATLAB file; FileNotFoundError or LabelFileError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return scipy.io.loadmat(path)
    except MAT_ERRORS as err:
        raise LabelFileError(f"{path}: not a readable MATLAB file ({err})") from err


# ----------------------------------------------------------------------------- image I/O

def _load_gray(path: Path) -> np.ndarray:
    return read_image(path, cv2.IMREAD_GRAYSCALE)


def load_map(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 map in [0, 1] from an 8-bit image, resized to `size`."""
    return load_map_levels(path, size).astype(np.float32) / 255.0


def load_fixations(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 binary fixation map at `size`, from a PNG/JPG or a `.mat` (DIEM's,
    CAT2000's).

    Points are moved to the new grid one by one: interpolating a sparse binary map would
    erase most of them.
    """
    if path.suffix.lower() == ".mat":
        try:
            mat = scipy.io.loadmat(path)
        except MAT_ERRORS as err:
            raise OSError(f"{path}: not a readable MATLAB file ({err})") from err
        name = next((n for n in FIXATION_VARIABLES if n in mat), None)
        if name is None:
            raise OSError(f"{path}: no variable {' or '.join(map(repr, FIXATION_VARIABLES))}")
        points = np.asarray(mat[name]) > 0
    else:
        points = _load_gray(path) > 127
    rows, cols = np.nonzero(points)
    return fixation_map(np.stack([cols, rows], axis=1), points.shape, size)


# ----------------------------------------------------------------------------- datasets

@dataclass(frozen=True)
class MosScale:
    """Maps MOS to [0, 1] with the training split's range and back."""
    low: float
    high: float

    @classmethod
    def fit(cls, mos: Sequence[float]) -> "MosScale":
        mos = np.asarray(mos, dtype=float)
        if len(mos) == 0 or mos.max() == mos.min():
            raise ValueError("MOS scaling needs at least two different scores")
        return cls(float(mos.min()), float(mos.max()))

    def to_unit(self, mos):
        return (mos - self.low) / (self.high - self.low)

    def to_mos(self, unit):
        return unit * (self.high - self.low) + self.low


def to_clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)


def stored_videos(frames_dir: str | Path) -> list[str]:
    """Ids of the videos `extract_frame.py` finished under `frames_dir` (ids may hold `/`)."""
    root = Path(frames_dir)
    return sorted(p.parent.relative_to(root).as_posix() for p in root.rglob(FRAME_LIST))


def load_stored_clip(folder: Path, size: tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
    """The K stored frames of one video: (T, 3, H, W) float in [0, 1], and their file names."""
    names = frame_files(folder)
    return to_clip_tensor(np.stack([load_rgb(folder / n, size) for n in names])), names


class VQAClipDataset(Dataset):
    """The K stored frames of each video, their saliency maps and the scaled MOS.

    Item: dict with `frames` (T, 3, H, W) float in [0, 1], `saliency` (T, 1, H, W) float
    in [0, 1] (zeros when saliency is off), `target` scalar (MOS scaled to [0, 1]), `mos`,
    `video_id`. Maps pair with frames by file name. Videos whose frames or maps are missing
    are reported and left out; no maps at all (with `saliency_dir` given) is an error.
    """

    def __init__(self, table: pd.DataFrame, frames_dir: str | Path,
                 saliency_dir: str | Path | None, scale: MosScale,
                 size: tuple[int, int] = FRAME_SIZE):
        self.frames_dir = Path(frames_dir)
        self.saliency_dir = None if saliency_dir is None else Path(saliency_dir)
        self.scale, self.size = scale, tuple(size)
        present = [(self.frames_dir / vid / FRAME_LIST).is_file() for vid in table["video_id"]]
        missing = table.loc[[not p for p in present], "video_id"].tolist()
        if missing:
            report(f"{self.frames_dir}: no extracted frames for {len(missing)} of {len(table)} "
                   f"video(s), left out ({shown_names(missing)})")
        self.table = table[present].reset_index(drop=True)
        if self.saliency_dir is not None:
            self._check_maps()

    def _check_maps(self) -> None:
        missing = {}  # video id -> its first missing map
        for vid in self.table["video_id"]:
            for name in frame_files(self.frames_dir / vid):
                if not (self.saliency_dir / vid / name).is_file():
                    missing[vid] = str(self.saliency_dir / vid / name)
                    break
        if missing and len(missing) == len(self.table):
            raise FileNotFoundError(
                f"{self.saliency_dir}: saliency maps missing for {len(missing)} video(s) "
                f"({shown_names(list(missing))}); run inference_sal.py on {self.frames_dir}, "
                "or switch saliency off")
        if missing:
            report(f"{self.saliency_dir}: saliency maps missing for {len(missing)} of "
                   f"{len(self.table)} video(s), left out ({shown_names(list(missing.values()))})")
            self.table = self.table[~self.table["video_id"].isin(missing)].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        row = self.table.iloc[index]
        frames, names = load_stored_clip(self.frames_dir / row["video_id"], self.size)
        if self.saliency_dir is None:
            saliency = torch.zeros(len(names), 1, *self.size)
        else:
            maps = [load_map(self.saliency_dir / row["video_id"] / n, self.size) for n in names]
            saliency = torch.from_numpy(np.stack(maps))[:, None]
        mos = float(row["mos"])
        return {"frames": frames, "saliency": saliency, "mos": mos,
                "target": torch.tensor(self.scale.to_unit(mos), dtype=torch.float32),
                "video_id": row["video_id"]}


class SaliencyClipDataset(Dataset):
    """Clips of T consecutive annotated frames with their maps and fixations.

    Training (`clips_per_video` random starts per video and epoch, drawn from `seed` and the
    epoch set with `set_epoch`) or evaluation (`starts="even"`: clips spread evenly over the
    video, the same every time). `flip`: each training clip is mirrored left to right with
    probability 1/2 (drawn like the start). Item: `frames` (3, T, H, W) float in [0, 1], `maps`
    (1, T, H, W) float in [0, 1], `fixations` (1, T, H, W) binary float, `video_id`, `start`.
    """

    def __init__(self, videos: Sequence[SaliencyVideo], clip_len: int = 8,
                 size: tuple[int, int] = FRAME_SIZE, clips_per_video: int = 1,
                 starts: str = "random", seed: int = 0, flip: bool = False):
        if starts not in ("random", "even"):
            raise ValueError("starts must be 'random' or 'even'")
        self.videos = [v for v in videos if len(v) >= 1]
        self.clip_len, self.size = clip_len, tuple(size)
        self.clips_per_video, self.starts, self.seed = clips_per_video, starts, seed
        self.flip = flip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def clip_start(self, index: int) -> int:
        video = self.videos[index // self.clips_per_video]
        room = max(len(video) - self.clip_len, 0)
        if self.starts == "even":
            slot = index % self.clips_per_video
            return int(round(room * slot / max(self.clips_per_video - 1, 1)))
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return int(rng.integers(0, room + 1))

    def __getitem__(self, index: int) -> dict:
        video = self.videos[index // self.clips_per_video]
        start = self.clip_start(index)
        # a video shorter than the clip repeats its last frame
        picks = [min(start + i, len(video) - 1) for i in range(self.clip_len)]
        frames, shapes = self._frames(video, picks)
        notes = [frame_annotation(video, i, shape, self.size) for i, shape in zip(picks, shapes)]
        maps, fixations = (np.stack(parts) for parts in zip(*notes))
        if self.flip and np.random.default_rng((self.seed, self.epoch, index, 1)).random() < 0.5:
            frames, maps, fixations = (np.ascontiguousarray(a[:, :, ::-1])
                                       for a in (frames, maps, fixations))
        return {"frames": to_clip_tensor(frames).permute(1, 0, 2, 3),
                "maps": torch.from_numpy(maps)[None], "fixations": torch.from_numpy(fixations)[None],
                "video_id": video.video_id, "start": start}

    def _frames(self, video: SaliencyVideo, picks: list[int]
                ) -> tuple[np.ndarray, list[tuple[int, int] | None]]:
        """(T, H, W, 3) uint8 RGB frames `picks` of `video` at the dataset's size, and each
        frame's size before resizing (None for frames decoded from a video file)."""
        if video.frames is None:
            numbers = [video.frame_numbers[i] for i in picks]
            unique = sorted(set(numbers))
            decoded = read_frames_at(video.video, unique, self.size)
            return decoded[[unique.index(n) for n in numbers]], [None] * len(picks)
        images = {i: read_image(video.frames[i]) for i in sorted(set(picks))}
        resized = {i: rgb_at(image, self.size) for i, image in images.items()}
        return (np.stack([resized[i] for i in picks]),
                [images[i].shape[:2] for i in picks])


def frame_annotation(video: SaliencyVideo, index: int, image_size: tuple[int, int] | None,
                     size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(density map, fixation map) of frame `index` of `video`, each (H, W) float32 at `size`;
    `image_size` is the frame's own (height, width), which points are given in."""
    points = video.points[index] if video.points is not None else None
    if points is not None and image_size is None:
        raise ValueError(f"{video.video_id}: fixation points need frames from image files, "
                         "whose size they are given in")
    if video.maps:
        density = load_map(video.maps[index], size)
    else:
        density = density_map(points, image_size, size)
    if points is not None:
        return density, fixation_map(points, image_size, size)
    if video.fixations:
        return density, load_fixations(video.fixations[index], size)
    return density, np.zeros(size, np.float32)
