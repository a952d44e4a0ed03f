"""Bad inputs through the scripts' entry points (their main(), as the shell calls them): one test
per kind of bad input. Each gets a message naming the file and the problem, the good inputs
around it are still processed, and the exit status says how it went:
0 everything done, 1 done but some inputs failed or were left out, 2 an error stopped the run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import evaluate_vqa
import extract_frame
import inference_sal
import train_lsvq
import train_sal
from conftest import write_video
from dataloader import MosScale, VQAClipDataset, load_stored_clip
from dagr.datasets import read_table
from fakes import tiny_dhf1k
from fakes_vqa import SIZE, stored_quality_set, train_argv
from dagr.checkpoints import save_checkpoint
from dagr.outputs import FAILURES, failures_file
from sal_withreg import build_saliency_model
from VQA import build_quality_model

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE_ARGS = [str(n) for n in SIZE]
CPU = ["--device", "cpu", "--workers", "0"]


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(saliency checkpoint, quality checkpoint): tiny untrained networks at SIZE."""
    base = tmp_path_factory.mktemp("models")
    kwargs = {"channels": 4, "registers": 0}
    saliency = build_saliency_model(**kwargs)
    save_checkpoint(base / "saliency.pt", {
        "kind": "saliency", "model_kwargs": kwargs, "model_state": saliency.state_dict(),
        "settings": {"size": list(SIZE)}})
    quality = build_quality_model(backbone="resnet18", weights=None, layers=1, feedforward=64)
    save_checkpoint(base / "quality.pt", {
        "kind": "quality", "model_kwargs": quality.config, "model_state": quality.state_dict(),
        "mos_scale": {"low": 1.0, "high": 5.0}, "frame_size": list(SIZE)})
    return base / "saliency.pt", base / "quality.pt"


@pytest.fixture(scope="module")
def quality_set(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(KoNViD labels, stored frames, saliency maps) of 12 videos, ids 1000-1011."""
    return stored_quality_set(tmp_path_factory.mktemp("set"))


@pytest.fixture
def good_video(tmp_path) -> Path:
    return write_video(tmp_path / "videos" / "good.avi", 12, size=SIZE)


def extract(inputs: list[Path], out: Path) -> int:
    return extract_frame.main(["--videos", *map(str, inputs), "--out", str(out), "--workers", "1",
                               "--size", *SIZE_ARGS])


def score(models: tuple[Path, Path], inputs: list[Path], out: Path) -> int:
    saliency, quality = models
    return evaluate_vqa.main(["--checkpoint", str(quality), "--saliency-checkpoint", str(saliency),
                              "--videos", *map(str, inputs), "--out", str(out),
                              "--batch-size", "2", *CPU])


def render(models: tuple[Path, Path], inputs: list[Path], out: Path) -> int:
    return inference_sal.main(["--checkpoint", str(models[0]), "--videos", *map(str, inputs),
                               "--all-frames", "--out", str(out), *CPU])


def evaluate(models: tuple[Path, Path], labels: Path, frames: Path, maps: Path, out: Path) -> int:
    return evaluate_vqa.main(["--checkpoint", str(models[1]), "--dataset", "konvid", "--labels",
                              str(labels), "--frames", str(frames), "--saliency", str(maps),
                              "--out", str(out), *CPU])


def train(labels: Path, frames: Path, maps: Path | None, out: Path, *options: str) -> int:
    return train_lsvq.main(train_argv(labels, frames, maps, out, "--epochs", "1", *options))


def konvid_labels(path: Path, rows: list[tuple]) -> Path:
    path.write_text("flickr_id,mos\n" + "".join(f"{vid},{mos}\n" for vid, mos in rows))
    return path


def good_rows(labels: Path) -> list[tuple]:
    return list(pd.read_csv(labels).itertuples(index=False, name=None))


def frame_list(folder: Path) -> dict:
    """A stored video's frames.json."""
    return json.loads((folder / extract_frame.FRAME_LIST).read_text())


def predictions(out: Path, name: str = "predictions_KoNViD-1k.csv") -> pd.DataFrame:
    return pd.read_csv(out / name, dtype={"video_id": str})


def check_video_failure(video: Path, problem: str, good: Path, code: int, err: str,
                        out: Path, scores: Path, code_scores: int, err_scores: str,
                        also_scored: list[Path] = (), kind: str = "") -> None:
    """extract_frame and scoring: the bad video named with its problem (and, in both failure
    lists, its kind), exit 1, the good done."""
    assert code == 1 and code_scores == 1
    for text in (err, err_scores):
        assert str(video) in text and problem in text
    assert (out / good.stem / extract_frame.FRAME_LIST).is_file()
    assert not (out / video.stem).exists()
    assert f"{video.stem},{kind}," in (out / FAILURES).read_text()
    assert pd.read_csv(scores)["video"].tolist() == [str(good), *map(str, also_scored)]
    failed = pd.read_csv(failures_file(scores, folder=False))
    assert failed["video"].tolist() == [str(video)] and failed["kind"].tolist() == [kind]


# ----------------------------------------------------------------------------- videos

def test_truncated_video(tmp_path, good_video, models, capsys) -> None:
    """A cut AVI still decodes its first frames: sampled over them, with a note. A cut MP4
    (its index was at the end) cannot be opened: a failure, of the kind not-media."""
    cut_avi = write_video(tmp_path / "videos" / "cut_avi.avi", 40, size=SIZE)
    cut_mp4 = write_video(tmp_path / "videos" / "cut_mp4.mp4", 40, size=SIZE, codec="mp4v")
    for path in (cut_avi, cut_mp4):
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    code = extract([good_video, cut_avi, cut_mp4], tmp_path / "frames")
    err = capsys.readouterr().err
    assert f"note: {cut_avi}: container declares 40 frames but" in err
    listed = frame_list(tmp_path / "frames" / "cut_avi")
    assert 0 < listed["decoded"] < 40 and len(listed["frames"]) == 8
    code_scores = score(models, [good_video, cut_avi, cut_mp4], tmp_path / "scores.csv")
    err_scores = capsys.readouterr().err
    assert str(cut_avi) not in err_scores  # scored over the frames that decode
    check_video_failure(cut_mp4, "damaged beyond its header", good_video, code, err,
                        tmp_path / "frames", tmp_path / "scores.csv", code_scores, err_scores,
                        also_scored=[cut_avi], kind="not-media")


@pytest.mark.parametrize("name, content, kind, problem", [
    ("empty.mp4", b"", "empty-file", "empty file (0 bytes)"),
    ("notes.mp4", b"this is a text file, not a video\n" * 40, "not-media",
     "not a media file FFmpeg can read"),
])
def test_file_named_as_a_video_that_is_none(tmp_path, good_video, models, capsys, name,
                                            content, kind, problem) -> None:
    bad = tmp_path / "videos" / name
    bad.write_bytes(content)
    code = extract([good_video, bad], tmp_path / "frames")
    err = capsys.readouterr().err
    code_scores = score(models, [good_video, bad], tmp_path / "scores.csv")
    err_scores = capsys.readouterr().err
    check_video_failure(bad, problem, good_video, code, err, tmp_path / "frames",
                        tmp_path / "scores.csv", code_scores, err_scores, kind=kind)
    assert render(models, [good_video, bad], tmp_path / "renders") == 1
    assert f"{bad}: {problem}" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["failures.csv", "good.mp4"]


def test_zero_byte_label_file_and_checkpoint(tmp_path, quality_set, models, capsys) -> None:
    _, frames, maps = quality_set
    labels = tmp_path / "KoNViD_1k_mos.csv"
    labels.write_bytes(b"")
    assert train(labels, frames, maps, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert f"error: {labels}: not a readable CSV file" in err
    checkpoint = tmp_path / "empty.pt"
    checkpoint.write_bytes(b"")
    assert inference_sal.main(["--checkpoint", str(checkpoint), "--frames", str(frames),
                               "--out", str(tmp_path / "maps"), *CPU]) == 2
    assert f"error: {checkpoint}: not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_video_with_one_frame(tmp_path, good_video, models, capsys) -> None:
    single = write_video(tmp_path / "videos" / "single.avi", 1, size=SIZE)
    assert extract([good_video, single], tmp_path / "frames") == 0
    err = capsys.readouterr().err
    assert f"note: {single}: only 1 frames decode; repeated frames to get 8" in err
    assert frame_list(tmp_path / "frames" / "single")["frames"] == ["00000.png"] * 8
    clip, _ = load_stored_clip(tmp_path / "frames" / "single", SIZE)
    assert clip.shape == (8, 3, *SIZE) and torch.equal(clip[0], clip[7])

    assert score(models, [good_video, single], tmp_path / "scores.csv") == 0
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert sorted(scores["video"]) == sorted([str(good_video), str(single)])
    assert np.isfinite(scores["score"]).all()

    assert render(models, [single], tmp_path / "renders") == 0
    capture = cv2.VideoCapture(str(tmp_path / "renders" / "single.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 1  # one overlay for the one frame
    capture.release()


# ----------------------------------------------------------------------------- label files

def test_label_file_with_a_missing_column(tmp_path, quality_set, models, good_video,
                                          capsys) -> None:
    _, frames, maps = quality_set
    labels = tmp_path / "KoNViD_1k_mos.csv"
    labels.write_text("flickr_id,score\n1000,3.2\n1001,4.0\n")
    expected = f"error: {labels}: missing column(s) 'mos' or 'MOS'; it has: flickr_id, score"
    assert train(labels, frames, maps, tmp_path / "run") == 2
    assert expected in capsys.readouterr().err
    assert evaluate(models, labels, frames, maps, tmp_path / "eval") == 2
    assert expected in capsys.readouterr().err
    assert extract_frame.main(["--dataset", "konvid", "--labels", str(labels), "--root",
                               str(good_video.parent), "--out", str(tmp_path / "frames")]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_nan_or_text_in_the_mos_column(tmp_path, quality_set, models, capsys) -> None:
    source, frames, maps = quality_set
    rows = good_rows(source)
    rows[3], rows[5] = (rows[3][0], "NaN"), (rows[5][0], "n/a")
    labels = konvid_labels(tmp_path / "KoNViD_1k_mos.csv", rows)
    bad = {str(rows[3][0]), str(rows[5][0])}
    message = f"warning: {labels}: 2 row(s) with a missing or non-numeric MOS left out (1003, 1005)"

    assert evaluate(models, labels, frames, maps, tmp_path / "eval") == 1
    assert message in capsys.readouterr().err
    scored = predictions(tmp_path / "eval")
    assert len(scored) == 10 and not bad & set(scored["video_id"])

    assert train(labels, frames, None, tmp_path / "run") == 1
    assert message in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "run" / "log.csv")) == 1  # it trained
    tested = predictions(tmp_path / "run", "predictions_test.csv")
    assert len(tested) == 3 and not bad & set(tested["video_id"])  # 34 % of the 10 good videos


def test_duplicated_video_ids(tmp_path, quality_set, models, good_video, capsys) -> None:
    source, frames, maps = quality_set
    rows = good_rows(source)
    rows.insert(4, (rows[1][0], 1.5))  # 1001 again, with another score
    labels = konvid_labels(tmp_path / "KoNViD_1k_mos.csv", rows)
    assert evaluate(models, labels, frames, maps, tmp_path / "eval") == 1
    err = capsys.readouterr().err
    assert f"warning: {labels}: 1 repeated video id(s), first row kept (1001)" in err
    scored = predictions(tmp_path / "eval")
    assert len(scored) == 12
    assert scored.set_index("video_id").loc["1001", "mos"] == pytest.approx(rows[1][1])

    # two files with the same id given to extract_frame: the first is extracted
    other = write_video(tmp_path / "elsewhere" / "good.avi", 5, size=SIZE)
    assert extract([good_video, other], tmp_path / "frames") == 1
    assert f"{other}: another video already has the id 'good'; skipped" in capsys.readouterr().err
    assert frame_list(tmp_path / "frames" / "good")["decoded"] == 12


# ----------------------------------------------------------------------------- stored data

@pytest.mark.slow
def test_a_missing_saliency_map(tmp_path, quality_set, models, capsys) -> None:
    labels, frames, source_maps = quality_set
    maps = tmp_path / "maps"
    shutil.copytree(source_maps, maps)
    lost = maps / "1004" / frame_list(frames / "1004")["frames"][2]
    lost.unlink()
    message = f"{maps}: saliency maps missing for 1 of 12 video(s), left out ({lost})"

    assert evaluate(models, labels, frames, maps, tmp_path / "eval") == 1
    assert f"warning: {message}" in capsys.readouterr().err
    scored = predictions(tmp_path / "eval")
    assert len(scored) == 11 and "1004" not in set(scored["video_id"])

    assert train(labels, frames, maps, tmp_path / "run") == 1
    err = capsys.readouterr().err  # 1004 is in one of the train / val / test splits
    assert f"{maps}: saliency maps missing for 1 of" in err and f"left out ({lost})" in err
    assert (tmp_path / "run" / "best.pt").is_file()
    assert "1004" not in set(predictions(tmp_path / "run", "predictions_test.csv")["video_id"])


def test_frames_of_different_sizes(tmp_path, quality_set, models, capsys) -> None:
    """Stored frames of another size than the network's (a whole video at twice the size, and a
    video whose frames alternate between two sizes) are resized on loading: handled, so no
    message. Each comes back as the frame it was made from; maps are written for them."""
    labels, source_frames, maps = quality_set
    frames = tmp_path / "frames"
    shutil.copytree(source_frames, frames)
    originals = {vid: load_stored_clip(source_frames / vid, SIZE)[0] for vid in ("1000", "1001")}
    for vid, every in (("1000", 1), ("1001", 2)):  # 1000: every frame, 1001: every other one
        for name in frame_list(frames / vid)["frames"][::every]:
            image = cv2.imread(str(frames / vid / name))
            cv2.imwrite(str(frames / vid / name), cv2.resize(image, None, fx=2, fy=2,
                                                             interpolation=cv2.INTER_NEAREST))
    table = read_table("konvid", labels)
    data = VQAClipDataset(table, frames, maps, MosScale(1.0, 5.0), SIZE)
    for index, vid in ((0, "1000"), (1, "1001")):
        assert data[index]["video_id"] == vid
        assert torch.allclose(data[index]["frames"], originals[vid], atol=1e-6)

    out = tmp_path / "maps"
    assert inference_sal.main(["--checkpoint", str(models[0]), "--frames", str(frames),
                               "--out", str(out), *CPU]) == 0
    assert "warning" not in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(table["video_id"])
    assert evaluate(models, labels, frames, out, tmp_path / "eval") == 0
    assert len(predictions(tmp_path / "eval")) == 12


# ----------------------------------------------------------------------------- outputs, checkpoints

def test_an_output_folder_that_cannot_be_written(tmp_path, quality_set, models, good_video,
                                                 capsys) -> None:
    """A folder below a regular file cannot be made, not even by root (who ignores chmod)."""
    labels, frames, maps = quality_set
    (tmp_path / "file.txt").write_text("a file, not a folder")
    bad = tmp_path / "file.txt" / "out"
    root = tiny_dhf1k(tmp_path / "DHF1K", n_train=1, n_val=1, frames=4)
    runs = {
        "extract_frame": lambda: extract([good_video], bad),
        "inference_sal": lambda: inference_sal.main(["--checkpoint", str(models[0]), "--frames",
                                                     str(frames), "--out", str(bad), *CPU]),
        "train_sal": lambda: train_sal.main(["--root", str(root), "--out", str(bad), *CPU]),
        "train_lsvq": lambda: train(labels, frames, maps, bad),
        "evaluate_vqa": lambda: evaluate(models, labels, frames, maps, bad),
        "evaluate_vqa --videos": lambda: score(models, [good_video], bad / "scores.csv"),
    }
    for name, run in runs.items():
        assert run() == 2, name
        err = capsys.readouterr().err
        assert f"error: {bad}: output folder cannot be written" in err, (name, err)
        assert "Traceback" not in err


def test_a_checkpoint_of_the_wrong_kind(tmp_path, quality_set, models, good_video, capsys) -> None:
    labels, frames, maps = quality_set
    saliency, quality = models
    root = tiny_dhf1k(tmp_path / "DHF1K", n_train=1, n_val=1, frames=4)
    wrong_last = tmp_path / "resume"
    wrong_last.mkdir()
    shutil.copy(saliency, wrong_last / "last.pt")
    runs = {  # (command, the checkpoint it is given by mistake, the kind it needs)
        "inference_sal": (lambda: inference_sal.main(["--checkpoint", str(quality), "--frames",
                                                      str(frames), "--out", str(tmp_path / "o"),
                                                      *CPU]), quality, "saliency"),
        "train_sal --evaluate": (lambda: train_sal.main(["--evaluate", str(quality), "--root",
                                                         str(root), *CPU]), quality, "saliency"),
        "evaluate_vqa": (lambda: evaluate((quality, saliency), labels, frames, maps,
                                          tmp_path / "e"), saliency, "quality"),
        "evaluate_vqa --saliency-checkpoint": (
            lambda: score((quality, quality), [good_video], tmp_path / "s.csv"), quality,
            "saliency"),
        "train_lsvq --init": (lambda: train_lsvq.main(
            [o for o in train_argv(labels, frames, maps, tmp_path / "t") if o != "--no-pretrained"]
            + ["--init", str(saliency)]), saliency, "quality"),
        "train_lsvq --resume": (lambda: train(labels, frames, maps, wrong_last, "--resume"),
                                wrong_last / "last.pt", "quality"),
    }
    for name, (run, given, needed) in runs.items():
        assert run() == 2, name
        err = capsys.readouterr().err
        found = "quality" if needed == "saliency" else "saliency"
        expected = f"error: {given}: this is a '{found}' checkpoint, not a {needed} checkpoint"
        assert expected in err, (name, err)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "t" / "last.pt").exists()
