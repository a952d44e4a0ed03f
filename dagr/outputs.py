"""Where a per-video stage writes (its --out), checked before any work, and the one naming
rule of its failures CSV.

A stage's output is a folder (frames, maps, overlay videos, evaluation results) or a file (the
scores of `evaluate_vqa.py --videos`). `folder_output` and `scores_output` check it before the
stage loads a model or reads a video, so that a run never does its work and then finds it
cannot keep it: the kind (a folder given where a file is meant, a suffix that is not a format),
whether it can be written, and whether an earlier run's result is there (resumed or refused,
in one line).

Scores files: `.csv`, `.json` (a list of {"video", "score"} objects) or `.jsonl` (one such
object per line), by the suffix; a path that ends in `/` or is an existing folder means
`<folder>/scores.csv`.

The failures CSV of an output (`failures_file`): `<out>/failures.csv` inside a folder output,
`<stem>_failures.csv` beside a file output (`scores.csv` -> `scores_failures.csv`); a scores
file's sidecar (`sidecar_file`, dagr/provenance.py writes it): `<stem>.meta.json`. Two scores
files of one stem in one folder would share both, so a scores file of that stem in another
format there refuses a new one.

Imports no project module but dagr.files and dagr.sharding.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dagr.files import creatable_folder
from dagr.sharding import Shard, partial_path

FAILURES = "failures.csv"          # inside a folder output
FAILURES_SUFFIX = "_failures.csv"  # beside a file output, after its stem
SCORES = "scores.csv"              # the scores file of a folder given to scoring
SCORE_FORMATS = (".csv", ".json", ".jsonl")
SIDECAR_SUFFIX = ".meta.json"      # beside a scores file, after its stem


@dataclass(frozen=True)
class Output:
    """A stage's output: `path`, a folder (`folder`) or a file."""
    path: Path
    folder: bool

    @property
    def failures(self) -> Path:
        return failures_file(self.path, self.folder)

    def create(self) -> None:
        """Make the folder the output goes in (checked, not made, before the work starts)."""
        (self.path if self.folder else self.path.parent).mkdir(parents=True, exist_ok=True)


def failures_file(out: str | os.PathLike, folder: bool) -> Path:
    """The failures CSV of the output `out`: `<out>/failures.csv` for a folder, `<stem>_failures.csv`
    beside a file (`scores.json` -> `scores_failures.csv`)."""
    out = Path(out)
    return out / FAILURES if folder else out.with_name(out.stem + FAILURES_SUFFIX)


def sidecar_file(scores_file: str | os.PathLike) -> Path:
    """The sidecar of a scores file: `scores.csv` -> `scores.meta.json` (suffix replaced)."""
    path = Path(scores_file)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def folder_output(path: str | os.PathLike) -> Output:
    """The output folder `path`, checked (made when the run starts: `Output.create`); OSError
    naming it when it is a file or cannot be written. Its finished work is kept: the stages
    skip it (resumed)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(f"{path}: is a file; --out names a folder here")
    return Output(creatable_folder(path), True)


def scores_path(text: str | os.PathLike) -> Path:
    """The scores file that --out `text` names: `<folder>/scores.csv` for a path that ends in
    `/` or is a folder; ValueError for a suffix that is not a format."""
    path = Path(text)
    if str(text).endswith(("/", os.sep)) or path.is_dir():
        return path / SCORES
    if path.suffix.lower() not in SCORE_FORMATS:
        raise ValueError(f"{text}: a scores file ends in {', '.join(SCORE_FORMATS)} (its format), "
                         "or give a folder ending in / for <folder>/scores.csv")
    return path


def scores_output(text: str | os.PathLike, shard: Shard = Shard(), resume: bool = False) -> Output:
    """The scores file of --out `text` (`scores_path`), its folder checked (and made when the
    run starts: `Output.create`); an earlier run's result there is resumed (--resume and its
    partial file) or refused with OSError naming it, before any work, and so is a scores file
    of the same stem in another format (the two would share their failures CSV and sidecar)."""
    path = scores_path(text)
    creatable_folder(path.parent)
    partial = partial_path(path, shard)
    if partial.is_file() and not resume:
        raise OSError(f"{partial}: the scores of an interrupted run are kept there; --resume "
                      "continues it (remove it to start again)")
    if path.exists() and not partial.is_file():
        raise OSError(f"{path}: already exists (an earlier run's result); give another --out "
                      "or remove it")
    for other in (path.with_suffix(suffix) for suffix in SCORE_FORMATS):
        if other != path and other.exists():
            raise OSError(f"{other}: already exists, and {path.name} would share its failures "
                          f"CSV and sidecar ({sidecar_file(path).name}); give another --out or "
                          "remove it")
    return Output(path, False)
