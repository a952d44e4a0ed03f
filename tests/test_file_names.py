"""File names from the wild work end to end: a name that is not valid UTF-8 (`caf\\xe9.avi`,
which crashed OpenCV), names with spaces, quotes, a newline, a leading `-`, a comma, or one that
FFmpeg would read as a protocol (`data:x.avi`) are sampled (extraction), mapped (saliency
maps) and scored; every CSV id reads back to the very same file (its bytes), a broken file
with such a name included."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from conftest import write_video
from fakes import TINY_SIZE
from fakes_vqa import scoring_checkpoints
from dagr.outputs import FAILURES
from dagr.files import NAMES_ENCODING
from processes import run

SIZE = [str(n) for n in TINY_SIZE]
NAMES = [b"caf\xe9", b"with space", b"quote\"'", b"new\nline", b"-dash", b"data:x",
         b"comma, semi;"]
BROKEN = b"broken\xff"  # not a video, and not UTF-8 either


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", **NAMES_ENCODING) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("names") / "videos"
    plain = write_video(folder / "plain.avi", 12, size=(40, 56))
    for name in NAMES:  # OpenCV cannot write such names: copy under the raw bytes
        shutil.copy(plain, os.fsencode(folder) + b"/" + name + b".avi")
    (Path(os.fsdecode(os.fsencode(folder) + b"/" + BROKEN + b".avi"))).write_text("no video")
    return folder


@pytest.mark.slow
def test_odd_names_are_sampled_mapped_and_scored_and_read_back(odd_videos, tmp_path):
    ids = {os.fsdecode(name) for name in NAMES} | {"plain"}
    broken = os.fsdecode(BROKEN)
    frames, maps = tmp_path / "frames", tmp_path / "maps"
    done = run("extract_frame.py", "--videos", str(odd_videos), "--out", str(frames), "--size", *SIZE,
               "--workers", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert {p.parent.name for p in frames.glob("*/frames.json")} == ids
    listed = rows(frames / FAILURES)
    assert [row["video_id"] for row in listed] == [broken] and listed[0]["kind"] == "not-media"
    assert os.fsencode(listed[0]["video_id"]) == BROKEN  # the bytes of the name, back
    assert "broken\\udcff.avi: not a media file" in done.stderr  # escaped, as Python does

    quality, sal = scoring_checkpoints(tmp_path, TINY_SIZE)
    done = run("inference_sal.py", "--checkpoint", str(sal), "--frames", str(frames), "--out",
               str(maps), "--device", "cpu", "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in maps.iterdir()} == ids
    assert all(len(list((maps / i).glob("*.png"))) == 8 for i in ids)

    scores = tmp_path / "scores.csv"
    done = run("evaluate_vqa.py", "--checkpoint", str(quality), "--videos", str(odd_videos),
               "--out", str(scores), "--device", "cpu", "--workers", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    scored = rows(scores)
    assert {Path(row["video"]).stem for row in scored} == ids
    assert all(Path(row["video"]).is_file() and float(row["score"]) == float(row["score"])
               for row in scored)
    failed = rows(tmp_path / "scores_failures.csv")
    assert [os.fsencode(Path(row["video"]).name) for row in failed] == [BROKEN + b".avi"]
