"""Any labelled quality set, and splits kept on disk.

Besides the four official readers of dataloader.py, two plain formats:
- `--dataset csv --labels FILE`: a CSV, TSV or XLSX table with a video column (a file name or
  a path relative to --video-root, with or without its extension), a score column (MOS, or
  DMOS with `--dmos`) and optionally a split column (`train`, `val`, `test`). The columns are
  found by their usual names unless `--video-column`, `--mos-column`, `--split-column` say.
- `--dataset labels-txt --labels FILE`: DOVER's and FAST-VQA's `path, duration, fps, score`
  lines (duration and fps are not used).
Both get the official readers' checks: rows with a missing or non-numeric score, repeated ids
and (with a video folder) missing videos are reported and left out.

DMOS (lower = better): trained on as given, a model predicts DMOS, and its correlations with
DMOS are positive; `--dmos` stores the negated score instead, so that higher is better as with
MOS (needed to compare with, fine-tune or evaluate a MOS-trained checkpoint).

Splits: `random_split` (seeded train / val / test) and `given_split` (a split column's);
on disk, `write_splits` writes `video_id,split` rows, `read_splits` turns such a file
back into the same {split: rows} a training run uses.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dataloader import (DATASETS, LabelFileError, _names, _read_csv, finish_table, read_labels,
                        require_columns)
from runtime import atomic_path
from video_io import VIDEO_EXTENSIONS

# ----------------------------------------------------------------------------- config
VIDEO_COLUMNS = ("video", "name", "filename", "file_name", "vid", "flickr_id", "video_name",
                 "Video", "Name", "File", "filename_video")
MOS_COLUMNS = ("mos", "MOS", "MOS full", "dmos", "DMOS", "score", "Score", "mos_score")
SPLIT_COLUMNS = ("split", "Split", "set")
SPLITS = "splits.csv"          # what every training run writes
# -----------------------------------------------------------------------------

MIN_VAL = 3  # a validation part's least size: correlations need at least three videos
PLAIN_FORMATS = ("csv", "labels-txt")
LABEL_DATASETS = (*DATASETS, *PLAIN_FORMATS)
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}


@dataclass(frozen=True)
class LabelColumns:
    """How a plain label table is read; None = find the column by its usual names."""
    video: str | None = None
    mos: str | None = None
    split: str | None = None
    dmos: bool = False


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the plain formats, the same in every script."""
    parser.add_argument("--video-column", help="--dataset csv: the video column (default: the "
                        f"first of {', '.join(VIDEO_COLUMNS[:7])}, ... found)")
    parser.add_argument("--mos-column", help="--dataset csv: the score column (default: the "
                        f"first of {', '.join(MOS_COLUMNS[:6])}, ... found)")
    parser.add_argument("--split-column", help="--dataset csv: a column of train/val/test "
                        "(default: 'split' when there is one; otherwise the split is drawn)")
    parser.add_argument("--dmos", action="store_true", help="the scores are DMOS (lower = "
                        "better): store them negated, so that higher is better (see the README)")


def label_columns(args: argparse.Namespace) -> LabelColumns:
    return LabelColumns(args.video_column, args.mos_column, args.split_column, args.dmos)


def read_table(dataset: str, labels: str | Path, video_root: str | Path | None = None,
               columns: LabelColumns = LabelColumns()) -> pd.DataFrame:
    """`video_id, path, mos, split` of any supported label file (official or plain)."""
    if dataset == "csv":
        return read_csv_labels(labels, video_root, columns)
    if dataset == "labels-txt":
        return read_labels_txt(labels, video_root, columns.dmos)
    return read_labels(dataset, labels, video_root)


def video_id_of(name: str) -> str:
    """A label's video name as an id: the path without a video extension (`a/b.mp4` -> `a/b`)."""
    name = str(name).strip().replace("\\", "/")
    path = Path(name)
    return path.with_suffix("").as_posix() if path.suffix.lower() in VIDEO_EXTENSIONS else name


def _table_file(labels: Path) -> pd.DataFrame:
    """A CSV, TSV (tab-separated, or any other delimiter pandas can sniff) or XLSX file."""
    if labels.suffix.lower() in (".xlsx", ".xls"):
        if not labels.is_file():
            raise FileNotFoundError(f"{labels}: label file not found")
        try:
            return pd.read_excel(labels)
        except Exception as err:  # openpyxl raises many kinds for a damaged workbook
            raise LabelFileError(f"{labels}: not a readable Excel workbook ({err})") from err
    if labels.suffix.lower() in (".tsv", ".tab"):
        if not labels.is_file():
            raise FileNotFoundError(f"{labels}: label file not found")
        try:
            return pd.read_csv(labels, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise LabelFileError(f"{labels}: not a readable TSV file ({err})") from err
    return _read_csv(labels)


def _pick(table: pd.DataFrame, given: str | None, usual: Sequence[str], what: str,
          source: Path, option: str) -> str | None:
    if given is not None:
        require_columns(table, [given], source)
        return given
    found = next((name for name in usual if name in table.columns), None)
    if found is None and what != "split":
        raise LabelFileError(f"{source}: no {what} column found (looked for "
                             f"{', '.join(map(repr, usual))}); name it with {option}; it has: "
                             f"{', '.join(map(str, table.columns))}")
    return found


def _splits_of(values: pd.Series, source: Path) -> pd.Series:
    split = values.astype(str).str.strip().str.lower().map(SPLIT_NAMES)
    unknown = sorted(set(values[split.isna()].astype(str)))
    if unknown:
        raise LabelFileError(f"{source}: split values {', '.join(map(repr, unknown[:5]))} are "
                             "not train, val or test")
    return split


def _names_of(column: pd.Series) -> pd.Series:
    """Video names as text; numeric ids that pandas read as floats (a column with an empty
    cell) lose their `.0`."""
    if pd.api.types.is_float_dtype(column) and (column % 1 == 0).all():
        column = column.astype("int64")
    return column.astype(str)


def read_csv_labels(labels: str | Path, video_root: str | Path | None = None,
                    columns: LabelColumns = LabelColumns()) -> pd.DataFrame:
    """`video_id, path, mos, split` of a CSV/TSV/XLSX label table (see the module's text)."""
    labels = Path(labels)
    raw = _table_file(labels)
    raw.columns = [str(c).strip() for c in raw.columns]
    video = _pick(raw, columns.video, VIDEO_COLUMNS, "video", labels, "--video-column")
    mos = _pick(raw, columns.mos, MOS_COLUMNS, "score", labels, "--mos-column")
    split = _pick(raw, columns.split, SPLIT_COLUMNS, "split", labels, "--split-column")
    if "dmos" in mos.lower() and not columns.dmos:
        print(f"note: {labels}: column {mos!r} looks like DMOS (lower = better); trained on "
              "as given unless --dmos", file=sys.stderr)
    raw = raw[raw[video].notna()]
    score = pd.to_numeric(raw[mos], errors="coerce")
    table = pd.DataFrame({"video_id": _names_of(raw[video]).map(video_id_of),
                          "mos": -score if columns.dmos else raw[mos],
                          "split": _splits_of(raw[split], labels) if split else "all"})
    return finish_table(table, labels, video_root)


def read_labels_txt(labels: str | Path, video_root: str | Path | None = None,
                    dmos: bool = False) -> pd.DataFrame:
    """`video_id, path, mos, split` of DOVER / FAST-VQA `path, duration, fps, score` lines."""
    labels = Path(labels)
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: label file not found")
    try:
        lines = labels.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise LabelFileError(f"{labels}: not a text file ({err})") from err
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 4 or not fields[0]:
            raise LabelFileError(f"{labels}: line {number} is not 'path, duration, fps, "
                                 f"score': {line.strip()[:80]!r}")
        rows.append((video_id_of(fields[0]), fields[3]))
    if not rows:
        raise LabelFileError(f"{labels}: no label lines")
    table = pd.DataFrame(rows, columns=["video_id", "mos"])
    if dmos:
        table["mos"] = -pd.to_numeric(table["mos"], errors="coerce")
    return finish_table(table.assign(split="all"), labels, video_root)


# ----------------------------------------------------------------------------- splits

def _hold_out(table: pd.DataFrame, fraction: float, rng: np.random.Generator,
              minimum: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held out): a random `fraction` of the rows (at least `minimum`, and never all)."""
    count = min(max(int(round(fraction * len(table))), minimum), len(table) - 1)
    order = rng.permutation(len(table))
    return (table.iloc[np.sort(order[count:])].reset_index(drop=True),
            table.iloc[np.sort(order[:count])].reset_index(drop=True))


def random_split(table: pd.DataFrame, val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, pd.DataFrame]:
    """Seeded train / val / test split of all rows: test_fraction of them for testing,
    val_fraction of the rest (at least MIN_VAL) for validation."""
    rng = np.random.default_rng(seed)
    pool, test = _hold_out(table, test_fraction, rng)
    train, val = _hold_out(pool, val_fraction, rng, MIN_VAL)
    return {"train": train, "val": val, "test": test}


def given_split(table: pd.DataFrame, val_fraction: float, seed: int) -> dict[str, pd.DataFrame]:
    """The rows of the split column: `train`; `val` (else a seeded hold-out of train); each
    test set (`test`, `test_1080p`) present."""
    train = table[table["split"] == "train"].reset_index(drop=True)
    if (table["split"] == "val").any():
        val = table[table["split"] == "val"].reset_index(drop=True)
    else:
        train, val = _hold_out(train, val_fraction, np.random.default_rng(seed), MIN_VAL)
    tests = {name: table[table["split"] == name].reset_index(drop=True)
             for name in ("test", "test_1080p") if (table["split"] == name).any()}
    return {"train": train, "val": val, **tests}


# ----------------------------------------------------------------------------- splits on disk

def write_splits(splits: dict[str, pd.DataFrame], path: str | Path) -> None:
    """`video_id,split` rows of every part of a run's split, written atomically."""
    rows = pd.concat([part[["video_id"]].assign(split=name) for name, part in splits.items()],
                     ignore_index=True)
    with atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False)


def read_splits(path: str | Path, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{split: rows of `table`} as a `write_splits` file gives them ("train" and "val" first).
    A video named there but absent from `table`, or named twice, is an error naming it."""
    path = Path(path)
    listed = _read_csv(path)
    require_columns(listed, ["video_id", "split"], path)
    listed["video_id"] = listed["video_id"].astype(str).str.strip()
    listed["split"] = listed["split"].astype(str).str.strip()
    repeated = listed.loc[listed["video_id"].duplicated(), "video_id"].tolist()
    if repeated:
        raise LabelFileError(f"{path}: video(s) named twice: {_names(repeated)}")
    absent = sorted(set(listed["video_id"]) - set(table["video_id"]))
    if absent:
        raise LabelFileError(f"{path}: {len(absent)} video(s) not in the labels (or left out "
                             f"of them): {_names(absent)}")
    for needed in ("train", "val"):
        if not (listed["split"] == needed).any():
            raise LabelFileError(f"{path}: no video in split {needed!r}")
    by_id = table.set_index("video_id", drop=False)
    names = ["train", "val", *dict.fromkeys(n for n in listed["split"] if n not in ("train", "val"))]
    return {name: by_id.loc[listed.loc[listed["split"] == name, "video_id"]].reset_index(drop=True)
            for name in names}
