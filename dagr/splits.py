"""Train / validation / test splits, and splits kept on disk.

`split_table` picks a run's split from the labels: a split column that names training videos
(LSVQ's `is_test`, a plain table's `split`) is used as given, with a seeded validation hold-out
of the training rows when it names none; any other set gets a seeded random split. Every
training run writes its split (`write_splits`, `video_id,split` rows) and `--splits FILE`
reads one back (`read_splits`) into the same parts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dagr.files import atomic_path
from dagr.labels import LabelFileError, read_csv_file, require_columns, shown_names

SPLITS = "splits.csv"  # what every training run writes
MIN_VAL = 3  # a validation part's least size: correlations need at least three videos
TEST_SPLITS = ("test", "test_1080p")  # split names of test rows in label tables


def split_table(table: pd.DataFrame, val_fraction: float, test_fraction: float,
                seed: int) -> dict[str, pd.DataFrame]:
    """{"train", "val", then one entry per test set}: `given_split` when the table's split
    column names training videos, else `random_split`. ValueError for a table of test videos
    only (such as LSVQ's 1080p file): it has nothing to train on."""
    if (table["split"] == "train").any():
        return given_split(table, val_fraction, seed)
    if table["split"].isin(TEST_SPLITS).all():
        raise ValueError("the labels name test videos only: nothing to train on (give the "
                         "file with the training rows)")
    return random_split(table, val_fraction, test_fraction, seed)


def evaluation_parts(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{split: rows} a trained model is tested on: the test rows (`test`, `test_1080p`) when
    the table has any, otherwise all rows as `all` (a cross-dataset test)."""
    tests = {split: table[table["split"] == split].reset_index(drop=True)
             for split in TEST_SPLITS if (table["split"] == split).any()}
    return tests or {"all": table}


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
    listed = read_csv_file(path)
    require_columns(listed, ["video_id", "split"], path)
    listed["video_id"] = listed["video_id"].astype(str).str.strip()
    listed["split"] = listed["split"].astype(str).str.strip()
    repeated = listed.loc[listed["video_id"].duplicated(), "video_id"].tolist()
    if repeated:
        raise LabelFileError(f"{path}: video(s) named twice: {shown_names(repeated)}")
    absent = sorted(set(listed["video_id"]) - set(table["video_id"]))
    if absent:
        raise LabelFileError(f"{path}: {len(absent)} video(s) not in the labels (or left out "
                             f"of them): {shown_names(absent)}")
    for needed in ("train", "val"):
        if not (listed["split"] == needed).any():
            raise LabelFileError(f"{path}: no video in split {needed!r}")
    by_id = table.set_index("video_id", drop=False)
    names = ["train", "val", *dict.fromkeys(n for n in listed["split"] if n not in ("train", "val"))]
    return {name: by_id.loc[listed.loc[listed["split"] == name, "video_id"]].reset_index(drop=True)
            for name in names}
