"""The repeated-split fine-tuning protocol (`evaluate_vqa.py --finetune-splits R`): train_lsvq.py
once per seeded random 80/20 split of one labelled set, each from a checkpoint's weights (or
its architecture with fresh weights), and the per-split test metrics with their median and
standard deviation (design.md, section 9). The trainer runs as its own process (the package
imports no script).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from dagr import figures
from dagr.checkpoints import load_checkpoint
from dagr.cli import Interrupted
from dagr.evaluation import RESULT_COLUMNS, write_results
from dagr.labelled_sets import LabelledSet

TRAINER = Path(__file__).resolve().parents[1] / "train_lsvq.py"  # what each split runs
FINETUNE_SPLITS = 10  # R by default
SEED = 0


def finetune_splits(checkpoint: str | Path | None, item: LabelledSet, out: str | Path,
                    splits: int = FINETUNE_SPLITS, from_scratch: bool = False, seed: int = SEED,
                    train_options: Sequence[str] = (), device: str | None = None) -> pd.DataFrame:
    """Run train_lsvq.py on `splits` seeded random splits of `item` (split r with seed + r),
    each from `checkpoint`'s weights (or its architecture with fresh weights, `from_scratch`),
    and collect each run's test metrics, tested with its best-on-validation checkpoint.
    Writes every run to `out/split_XX/`, and the per-split metrics with their median and std
    to `out/results.*` and `out/splits.png`; returns that table."""
    if splits < 1:
        raise ValueError("--finetune-splits needs at least one split")
    if "--splits" in train_options:
        raise ValueError("--splits does not combine with --finetune-splits, which draws its "
                         "splits (each written to split_XX/splits.csv); to reuse one, run "
                         "train_lsvq.py --splits FILE")
    out, start = Path(out), starting_point(checkpoint, from_scratch)
    rows = []
    for r in range(splits):
        run = out / f"split_{r + 1:02d}"
        argv = [sys.executable, str(TRAINER), *set_options(item), "--out", str(run),
                "--seed", str(seed + r), "--random-split",
                *(["--device", str(device)] if device else []), *train_options, *start]
        _run_trainer(argv, f"{r} of {splits} splits finished in {out}")
        tested = pd.read_csv(run / "results.csv").iloc[0]
        rows.append({**tested.to_dict(), "Dataset": f"Split {r + 1}"})
    per_split = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    results = summary_rows(per_split)
    write_results(results, out)
    figures.write_split_metrics(per_split, out / figures.SPLITS)
    return results


def starting_point(checkpoint: str | Path | None, from_scratch: bool) -> list[str]:
    """train_lsvq.py options for where each split's training starts: the checkpoint (its
    architecture and weights), or its architecture alone; they come last, so they win over
    the options after --."""
    if checkpoint is None:
        if not from_scratch:
            raise ValueError("fine-tuning needs --checkpoint (or --from-scratch)")
        return []
    if not from_scratch:
        return ["--init", str(checkpoint)]
    architecture = load_checkpoint(checkpoint, kind="quality")["model_kwargs"]
    return ["--backbone", str(architecture["backbone"]), "--variant", str(architecture["variant"]),
            "--saliency-alpha", str(architecture["saliency_alpha"])]


def set_options(item: LabelledSet) -> list[str]:
    """train_lsvq.py options that read `item`."""
    argv = ["--dataset", item.dataset, "--labels", str(item.labels), "--frames", str(item.frames)]
    argv += ["--saliency", str(item.saliency)] if item.saliency else []
    for option, value in (("--video-column", item.columns.video),
                          ("--mos-column", item.columns.mos),
                          ("--split-column", item.columns.split)):
        argv += [option, value] if value else []
    return argv + (["--dmos"] if item.columns.dmos else [])


def _run_trainer(argv: list[str], done: str) -> None:
    """Run one train_lsvq.py; a failure stops the protocol. Ctrl-C reaches the trainer too
    (one process group): it stops cleanly, and then so does this."""
    process = subprocess.Popen(argv)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.wait()
        raise Interrupted(f"{done}; run the same command again to redo the rest") from None
    if code != 0:
        raise ValueError(f"train_lsvq.py stopped with exit status {code} (its messages are "
                         f"above): {' '.join(argv[1:])}")


def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a Median and a Std (ddof = 1) row of its numeric columns appended."""
    numbers = table.drop(columns="Dataset")
    return pd.concat([table, pd.DataFrame([{"Dataset": "Median", **numbers.median().to_dict()},
                                           {"Dataset": "Std", **numbers.std().to_dict()}])],
                     ignore_index=True)
