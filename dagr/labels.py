"""Label tables: what every quality-set reader ends with, and the two plain formats that read
any labelled set.

Every reader (dataloader.py's official ones and the plain ones here) returns one table with the
columns `video_id, path, mos, split` through `finish_table`, which drops and reports rows with
a missing or non-numeric score, repeated ids and (given a video folder) missing videos: a row
is never replaced by another sample. Problems go to stderr, and to every `reported_problems()`
block around the reading, so that a script can end with a status that says some inputs were
left out.

The plain formats:
- `--dataset csv --labels FILE`: a CSV, TSV or XLSX table with a video column (a file name or
  a path relative to --video-root, with or without its extension), a score column (MOS, or
  DMOS with `--dmos`) and optionally a split column (`train`, `val`, `test`). The columns are
  found by their usual names unless `--video-column`, `--mos-column`, `--split-column` say.
- `--dataset labels-txt --labels FILE`: DOVER's and FAST-VQA's `path, duration, fps, score`
  lines (duration and fps are not used).

DMOS (lower = better): trained on as given, a model predicts DMOS, and its correlations with
DMOS are positive; `--dmos` stores the negated score instead, so that higher is better as with
MOS (needed to compare with, fine-tune or evaluate a MOS-trained checkpoint).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from dagr.video_io import VIDEO_EXTENSIONS

# ----------------------------------------------------------------------------- config
VIDEO_COLUMNS = ("video", "name", "filename", "file_name", "vid", "flickr_id", "video_name",
                 "Video", "Name", "File", "filename_video")
MOS_COLUMNS = ("mos", "MOS", "MOS full", "dmos", "DMOS", "score", "Score", "mos_score")
SPLIT_COLUMNS = ("split", "Split", "set")
# -----------------------------------------------------------------------------

COLUMNS = ["video_id", "path", "mos", "split"]
SHOW = 5  # how many names a report lists
_COLLECTORS: list[list[str]] = []  # the lists of the open reported_problems() blocks
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}
Columns = Sequence[str | tuple[str, ...]]  # a tuple lists alternative names of one column


class LabelFileError(ValueError):
    """A label file that cannot be used as it is; the message names the file."""


class MissingColumns(LabelFileError):
    """A label table without a column its reader needs; `columns` are the ones it has."""

    def __init__(self, message: str, columns: Sequence[str]):
        super().__init__(message)
        self.columns = list(columns)


def report(message: str) -> None:
    """Data problems go to stderr so that they stand apart from results, and to the lists of
    the open `reported_problems()` blocks."""
    for problems in _COLLECTORS:
        problems.append(message)
    print(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def reported_problems() -> Iterator[list[str]]:
    """The data problems that `report` says while the block runs, in order: what a script's
    exit status is decided from (the readers report deep inside datasets and trainers)."""
    problems: list[str] = []
    _COLLECTORS.append(problems)
    try:
        yield problems
    finally:
        _COLLECTORS[:] = [other for other in _COLLECTORS if other is not problems]


def shown_names(items: Sequence[str]) -> str:
    """The first SHOW of `items`, then "..." when there are more."""
    shown = ", ".join(map(str, items[:SHOW]))
    return shown + (", ..." if len(items) > SHOW else "")


def missing_columns(names: Sequence[str], columns: Columns) -> list[str]:
    """The columns (alternatives joined by "or") that a table with column `names` lacks."""
    missing = []
    for column in columns:
        alternatives = column if isinstance(column, tuple) else (column,)
        if not any(name in names for name in alternatives):
            missing.append(" or ".join(map(repr, alternatives)))
    return missing


def require_columns(table: pd.DataFrame, columns: Columns, source: str | Path) -> None:
    """Raise MissingColumns naming the file, what is missing and what is there."""
    missing = missing_columns(list(table.columns), columns)
    if missing:
        raise MissingColumns(f"{source}: missing column(s) {', '.join(missing)}; "
                             f"it has: {', '.join(map(str, table.columns))}", table.columns)


def read_csv_file(path: Path) -> pd.DataFrame:
    """A label CSV as pandas reads it; FileNotFoundError or LabelFileError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabelFileError(f"{path}: not a readable CSV file ({err})") from err


# ----------------------------------------------------------------------------- the common table

def index_videos(root: Path) -> dict[str, Path]:
    """Every video under `root` by its stem, and by its path relative to root without
    the extension (so both `722` and `yfcc-batch1/722` find `yfcc-batch1/722.mp4`)."""
    index = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            index.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
            index.setdefault(path.stem, path)
    return index


def finish_table(table: pd.DataFrame, source: str | Path, video_root: str | Path | None,
                 find: Callable[[str, dict[str, Path]], Path | None] | None = None) -> pd.DataFrame:
    """Clean a reader's `video_id, mos, split` table into `video_id, path, mos, split`.

    Drops, and reports, rows with a non-numeric or missing MOS, repeated ids (the first is
    kept) and, when `video_root` is given, rows whose video file is not there. `find` maps
    an id to its file using the index of `video_root` (default: the id itself).
    """
    table = table.copy()
    table["video_id"] = table["video_id"].astype(str).str.strip()
    mos = pd.to_numeric(table["mos"], errors="coerce")
    bad = table.loc[mos.isna() | ~np.isfinite(mos.fillna(0)), "video_id"].tolist()
    if bad:
        report(f"{source}: {len(bad)} row(s) with a missing or non-numeric MOS left out ({shown_names(bad)})")
    table["mos"] = mos
    table = table[mos.notna() & np.isfinite(mos.fillna(0))]
    repeated = table.loc[table["video_id"].duplicated(), "video_id"].tolist()
    if repeated:
        report(f"{source}: {len(repeated)} repeated video id(s), first row kept ({shown_names(repeated)})")
        table = table[~table["video_id"].duplicated()]
    table["path"] = None
    if video_root is not None:
        table = _attach_paths(table, source, Path(video_root), find or (lambda vid, idx: idx.get(vid)))
    return table[COLUMNS].reset_index(drop=True)


def _attach_paths(table: pd.DataFrame, source: str | Path, root: Path,
                  find: Callable[[str, dict[str, Path]], Path | None]) -> pd.DataFrame:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found")
    index = index_videos(root)
    paths = [find(vid, index) for vid in table["video_id"]]
    table["path"] = [str(p) if p is not None else None for p in paths]
    missing = table.loc[table["path"].isna(), "video_id"].tolist()
    if missing:
        report(f"{source}: {len(missing)} of {len(table)} video(s) not found under {root}, "
               f"left out ({shown_names(missing)})")
    return table[table["path"].notna()]



# ----------------------------------------------------------------------------- plain formats

@dataclass(frozen=True)
class LabelColumns:
    """How a plain label table is read; None = find the column by its usual names."""
    video: str | None = None
    mos: str | None = None
    split: str | None = None
    dmos: bool = False


def add_label_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> list[str]:
    """The options of the plain formats, the same in every script; returns their dests."""
    options = [
        parser.add_argument("--video-column", help="--dataset csv: the video column (default: "
                            f"the first of {', '.join(VIDEO_COLUMNS[:7])}, ... found)"),
        parser.add_argument("--mos-column", help="--dataset csv: the score column (default: "
                            f"the first of {', '.join(MOS_COLUMNS[:6])}, ... found)"),
        parser.add_argument("--split-column", help="--dataset csv: a column of train/val/test "
                            "(default: 'split' when there is one; otherwise the split is drawn)"),
        parser.add_argument("--dmos", action="store_true", help="the scores are DMOS (lower = "
                            "better): store them negated, so that higher is better"),
    ]
    return [action.dest for action in options]


def label_columns(args: argparse.Namespace) -> LabelColumns:
    return LabelColumns(args.video_column, args.mos_column, args.split_column, args.dmos)


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
    return read_csv_file(labels)


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


def splits_of(values: pd.Series, source: Path) -> pd.Series:
    """`values` as train / val / test (SPLIT_NAMES' spellings); LabelFileError naming `source`
    for any other value."""
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
                          "split": splits_of(raw[split], labels) if split else "all"})
    return finish_table(table, labels, video_root)


def read_labels_txt(labels: str | Path, video_root: str | Path | None = None,
                    columns: LabelColumns = LabelColumns()) -> pd.DataFrame:
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
    if columns.dmos:
        table["mos"] = -pd.to_numeric(table["mos"], errors="coerce")
    return finish_table(table.assign(split="all"), labels, video_root)
