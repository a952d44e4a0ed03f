import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch

import dataloader as dl
from dagr.datasets import read_saliency_set, read_table
from dagr.labels import COLUMNS, LabelFileError
from dagr.frames import write_frames
from dagr.video_io import sample_video
from conftest import frame_level_index, write_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LSVQ_HEADER = ("name,p1,p2,p3,height,width,mos_p1,mos_p2,mos_p3,mos,frame_number,fn_last_frame,"
               "is_test,is_valid")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"video")
    return path


# ----------------------------------------------------------------------------- quality readers

def test_lsvq_split_paths_and_missing_videos(tmp_path, capsys):
    labels = tmp_path / "labels_train_test.csv"
    labels.write_text(LSVQ_HEADER + "\n"
                      'yfcc-batch1/722,"[1, 2]","[1]","[1]",720,1280,50,51,52,61.5,200,x,False,True\n'
                      'yfcc-batch1/724,"[1, 2]","[1]","[1]",720,1280,50,51,52,40.0,200,x,True,True\n'
                      'ia-batch2/9,"[1, 2]","[1]","[1]",720,1280,50,51,52,70.0,200,x,False,True\n')
    touch(tmp_path / "videos" / "yfcc-batch1" / "722.mp4")
    touch(tmp_path / "videos" / "yfcc-batch1" / "724.mp4")
    table = read_table("lsvq", labels, tmp_path / "videos")
    assert list(table.columns) == COLUMNS
    assert table["video_id"].tolist() == ["yfcc-batch1/722", "yfcc-batch1/724"]
    assert table["split"].tolist() == ["train", "test"]
    assert table["mos"].tolist() == [61.5, 40.0]
    assert table["path"][0] == str(tmp_path / "videos" / "yfcc-batch1" / "722.mp4")
    err = capsys.readouterr().err
    assert "1 of 3 video(s) not found" in err and "ia-batch2/9" in err and "labels_train_test.csv" in err


def test_lsvq_1080p_file_without_is_test(tmp_path):
    labels = tmp_path / "labels_test_1080p.csv"
    labels.write_text("name,mos,is_valid\nyfcc-batch1/1,50,True\n")
    table = dl.read_lsvq(labels)
    assert table["split"].tolist() == ["test_1080p"] and table["path"].isna().all()


def test_lsvq_real_files_if_available():
    if not (SHARED / "LSVQ_whole_test.csv").is_file():
        pytest.skip("../shared/data not present")
    test = dl.read_lsvq(SHARED / "LSVQ_whole_test.csv")
    assert len(test) == 7220 and set(test["split"]) == {"test"}
    assert test["video_id"].iloc[0] == "yfcc-batch1/747" and 0 < test["mos"].min() < test["mos"].max() <= 100
    hd = dl.read_lsvq(SHARED / "LSVQ_whole_test_1080p.csv")
    assert len(hd) == 3561 and set(hd["split"]) == {"test_1080p"}


def test_missing_column_names_file_and_columns(tmp_path):
    labels = tmp_path / "KoNViD_1k_mos.csv"
    labels.write_text("flickr_id,score\n1,3.0\n")
    with pytest.raises(LabelFileError, match=r"KoNViD_1k_mos.csv: missing column\(s\) 'mos'.*flickr_id, score"):
        dl.read_konvid(labels)
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        dl.read_konvid(tmp_path / "nothere.csv")
    with pytest.raises(ValueError, match="unknown dataset"):
        read_table("imagenet", labels)


def test_konvid_both_label_files_and_bad_rows(tmp_path, capsys):
    root = tmp_path / "KoNViD_1k"
    for vid in ("111", "222", "333"):
        touch(root / "KoNViD_1k_videos" / f"{vid}.mp4")
    mos_csv = tmp_path / "KoNViD_1k_mos.csv"
    mos_csv.write_text("flickr_id,mos\n111,3.5\n222,n/a\n333,\n111,2.0\n")
    table = dl.read_konvid(mos_csv, root)
    assert table["video_id"].tolist() == ["111"] and table["mos"].tolist() == [3.5]
    err = capsys.readouterr().err
    assert "2 row(s) with a missing or non-numeric MOS" in err and "222" in err
    assert "1 repeated video id" in err
    attributes = tmp_path / "KoNViD_1k_attributes.csv"
    attributes.write_text("flickr_id,file_name,MOS,SD\n222,old_name.mp4,4.2,0.5\n333,x.mp4,1.5,0.3\n")
    table = dl.read_konvid(attributes, root)
    assert dict(zip(table["video_id"], table["mos"])) == {"222": 4.2, "333": 1.5}
    assert table["path"].str.endswith(".mp4").all()


def test_livevqc_mat(tmp_path):
    root = tmp_path / "LIVE-VQC"
    touch(root / "Video" / "A001.mp4")
    touch(root / "Video" / "B002.mp4")
    names = np.empty((2, 1), dtype=object)
    names[0, 0], names[1, 0] = np.array(["A001.mp4"]), np.array(["B002.mp4"])
    scipy.io.savemat(tmp_path / "data.mat", {"video_list": names, "mos": np.array([[70.5], [33.1]])})
    table = read_table("livevqc", tmp_path / "data.mat", root)
    assert table["video_id"].tolist() == ["A001", "B002"]
    assert np.allclose(table["mos"], [70.5, 33.1])
    scipy.io.savemat(tmp_path / "bad.mat", {"names": names})
    with pytest.raises(LabelFileError, match="bad.mat: needs the variables 'video_list' and 'mos'; it has: names"):
        dl.read_livevqc(tmp_path / "bad.mat")


def test_youtube_ugc_xlsx_and_csv_with_transcodes(tmp_path):
    root = tmp_path / "ugc"
    touch(root / "Gaming_720P-25aa.mkv")
    touch(root / "transcoded" / "Sports_1080P-0063_crf_10_ss_00_t_20.0.mp4")
    sheet = pd.DataFrame({"vid": ["Gaming_720P-25aa", "Sports_1080P-0063", "Vlog_360P-1111"],
                          "category": ["Gaming", "Sports", "Vlog"], "MOS full": [3.9, 2.7, 4.0],
                          "MOS chunk00": [3.8, 2.6, 4.1]})
    with pd.ExcelWriter(tmp_path / "ugc.xlsx") as writer:
        pd.DataFrame({"x": [1]}).to_excel(writer, sheet_name="Readme", index=False)
        sheet.to_excel(writer, sheet_name="MOS", index=False)
    table = dl.read_youtube_ugc(tmp_path / "ugc.xlsx", root)
    assert table["video_id"].tolist() == ["Gaming_720P-25aa", "Sports_1080P-0063"]
    assert table["path"][1].endswith("Sports_1080P-0063_crf_10_ss_00_t_20.0.mp4")
    assert table["split"].tolist() == ["Gaming", "Sports"]
    sheet.to_csv(tmp_path / "ugc.csv", index=False)
    from_csv = read_table("youtube-ugc", tmp_path / "ugc.csv")
    assert from_csv["mos"].tolist() == [3.9, 2.7, 4.0]
    sheet.drop(columns="MOS full").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(LabelFileError, match="'MOS full'"):
        dl.read_youtube_ugc(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- saliency readers

def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def dhf1k_video(root: Path, number: int, n_frames: int, size=(36, 64), with_images=False) -> None:
    """DHF1K layout; map i is a blob whose brightness encodes i, fixation at (i, i)."""
    write_video(root / "video" / f"{number:03d}.AVI", n_frames, size=size)
    folder = root / "annotation" / f"{number:04d}"
    for i in range(n_frames):
        density = np.zeros(size, np.uint8)
        density[10:20, 10:20] = 10 * (i + 1)
        fixation = np.zeros(size, np.uint8)
        fixation[i, i] = 255
        write_png(folder / "maps" / f"{i + 1:04d}.png", density)
        write_png(folder / "fixation" / f"{i + 1:04d}.png", fixation)
        if with_images:
            write_png(folder / "images" / f"{i + 1:04d}.png", np.full((*size, 3), 8 * i, np.uint8))


def test_dhf1k_reader_and_clip_dataset_from_video(tmp_path):
    dhf1k_video(tmp_path, 600, 12)
    dhf1k_video(tmp_path, 601, 10, with_images=True)
    (tmp_path / "annotation" / "0702").mkdir()
    videos = {v.video_id: v for v in read_saliency_set("dhf1k", tmp_path)}
    assert set(videos) == {"0600", "0601"}
    assert videos["0600"].split == "train" and videos["0601"].split == "val"
    assert videos["0600"].video is not None and videos["0601"].frames is not None
    assert len(videos["0600"]) == 12 and videos["0600"].frame_numbers[:3] == [0, 1, 2]
    data = dl.SaliencyClipDataset([videos["0600"]], clip_len=6, size=(36, 64), clips_per_video=3,
                                  starts="even")
    assert len(data) == 3
    item = data[2]
    assert item["start"] == 6
    assert item["frames"].shape == (3, 6, 36, 64) and item["maps"].shape == (1, 6, 36, 64)
    # frame content, map and fixation all belong to the same frame numbers
    levels = [frame_level_index((item["frames"][:, t].permute(1, 2, 0).numpy() * 255)) for t in range(6)]
    assert levels == list(range(6, 12))
    assert torch.allclose(item["maps"][0, :, 15, 15] * 255 / 10, torch.arange(7, 13).float(), atol=0.05)
    for t in range(6):
        assert item["fixations"][0, t].sum() == 1 and item["fixations"][0, t, 6 + t, 6 + t] == 1


def test_saliency_clip_random_starts_are_seeded_and_short_videos_pad(tmp_path):
    dhf1k_video(tmp_path, 601, 4, with_images=True)
    video = dl.read_dhf1k(tmp_path)[0]
    data = dl.SaliencyClipDataset([video], clip_len=8, size=(18, 32), clips_per_video=2, seed=3)
    item = data[0]
    assert item["frames"].shape == (3, 8, 18, 32) and item["start"] == 0
    # the last frame repeats: its map equals the fourth
    assert torch.equal(item["maps"][:, 7], item["maps"][:, 3])
    fixations = dl.load_fixations(video.fixations[3], (18, 32))
    assert fixations.sum() == 1  # a single point survives resizing


def write_diem(root: Path) -> None:
    (root / "fold_lists").mkdir(parents=True)
    (root / "fold_lists" / "DIEM_list_train_fps.txt").write_text("clipA 3 30\n")
    (root / "fold_lists" / "DIEM_list_test_fps.txt").write_text("clipB 3 30\nclipC 3 30\n")
    for name in ("clipA", "clipB"):
        for i in range(1, 4):
            write_png(root / "video_frames" / "DIEM" / name / f"img_{i:05d}.jpg", np.full((20, 30, 3), 9, np.uint8))
            gaze = np.zeros((20, 30), np.uint8)
            if i != 2:  # frame 2 has no gaze
                gaze[5:9, 5:9] = 200
            write_png(root / "annotations" / "DIEM" / name / "maps" / f"eyeMap_{i:05d}.jpg", gaze)
            scipy.io.savemat(root / "annotations" / "DIEM" / name / f"fixMap_{i:05d}.mat",
                             {"eyeMap": (gaze > 100).astype(np.uint8)})


def test_diem_reader_skips_gazeless_frames(tmp_path, capsys):
    write_diem(tmp_path)
    videos = {v.video_id: v for v in read_saliency_set("diem", tmp_path)}
    assert set(videos) == {"clipA", "clipB"}
    assert videos["clipA"].split == "train" and videos["clipB"].split == "test"
    assert videos["clipA"].frame_numbers == [0, 2]
    assert "clipC" in capsys.readouterr().err
    item = dl.SaliencyClipDataset([videos["clipB"]], clip_len=2, size=(20, 30))[0]
    assert item["fixations"].sum() == 2 * 16


# ----------------------------------------------------------------------------- VQA clips

def stored_video(frames_dir: Path, saliency_dir: Path | None, video_id: str, n_frames=10, size=(24, 40)):
    path = write_video(frames_dir.parent / "src" / f"{video_id}.avi", n_frames, size=size)
    write_frames(sample_video(path, k=8, size=size), frames_dir / video_id)
    if saliency_dir is not None:
        for name in dl.frame_files(frames_dir / video_id):
            index = int(name.split(".")[0])
            write_png(saliency_dir / video_id / name, np.full(size, 20 * index % 256, np.uint8))


def test_vqa_dataset_pairs_maps_with_frames_by_name(tmp_path, capsys):
    frames, maps = tmp_path / "frames", tmp_path / "maps"
    stored_video(frames, maps, "a", n_frames=10)
    stored_video(frames, maps, "b", n_frames=5)  # fewer frames than 8: names repeat
    table = pd.DataFrame({"video_id": ["a", "b", "gone"], "path": None, "mos": [4.0, 2.0, 3.0],
                          "split": "all"})
    data = dl.VQAClipDataset(table, frames, maps, dl.MosScale(1.0, 5.0), size=(24, 40))
    assert len(data) == 2 and "gone" in capsys.readouterr().err
    for item in (data[0], data[1]):
        assert item["frames"].shape == (8, 3, 24, 40) and item["saliency"].shape == (8, 1, 24, 40)
        levels = [frame_level_index(item["frames"][t].permute(1, 2, 0).numpy() * 255) for t in range(8)]
        expected = np.round(np.array(levels) * 20 % 256 / 255, 3)
        assert np.allclose(item["saliency"][:, 0, 5, 5].numpy(), expected, atol=2e-3)
    assert data[0]["target"].item() == pytest.approx(0.75)
    assert data[1]["video_id"] == "b"


def test_vqa_dataset_missing_maps_is_clear_unless_saliency_off(tmp_path):
    frames, maps = tmp_path / "frames", tmp_path / "maps"
    stored_video(frames, None, "a")
    table = pd.DataFrame({"video_id": ["a"], "path": None, "mos": [4.0], "split": "all"})
    with pytest.raises(FileNotFoundError, match=r"saliency maps missing for 1 video\(s\) \(a\).*inference_sal.py"):
        dl.VQAClipDataset(table, frames, maps, dl.MosScale(1, 5), size=(24, 40))
    data = dl.VQAClipDataset(table, frames, None, dl.MosScale(1, 5), size=(24, 40))
    assert torch.count_nonzero(data[0]["saliency"]) == 0


def test_mos_scale_round_trip():
    scale = dl.MosScale.fit([1.2, 4.8, 3.0])
    mos = np.array([1.2, 2.5, 4.8])
    assert np.allclose(scale.to_unit(mos), [0, (2.5 - 1.2) / 3.6, 1])
    assert np.allclose(scale.to_mos(scale.to_unit(mos)), mos)
    with pytest.raises(ValueError):
        dl.MosScale.fit([3.0, 3.0])


def test_frames_of_a_different_size_are_resized(tmp_path):
    write_png(tmp_path / "f.png", np.zeros((50, 70, 3), np.uint8))
    assert dl.load_rgb(tmp_path / "f.png", (24, 40)).shape == (24, 40, 3)
    with pytest.raises(OSError, match="nope.png"):
        dl.load_rgb(tmp_path / "nope.png", (24, 40))
    (tmp_path / "frames.json").write_text(json.dumps({"frames": ["x.png"]}))
    assert dl.frame_files(tmp_path) == ["x.png"]
