import json
import os

import cv2
import numpy as np
import pytest

import extract_frame as ef
from dagr import frames
from dagr.outputs import FAILURES
from dagr import video_io as vio
from conftest import frame_level_index


def test_find_videos_recursive_case_insensitive_with_relative_ids(tmp_path):
    for name in ("a.mp4", "sub/b.MKV", "sub/deep/c.avi", "notes.txt", "d.Mov"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = dict(ef.find_videos([tmp_path]))
    assert set(found) == {"a", "sub/b", "sub/deep/c", "d"}
    assert dict(ef.find_videos([tmp_path / "sub" / "b.MKV"])) == {"b": tmp_path / "sub" / "b.MKV"}
    with pytest.raises(FileNotFoundError, match="nope"):
        ef.find_videos([tmp_path / "nope"])


def test_extract_writes_named_frames_and_list(tmp_path, make_video):
    make_video("videos/v1.avi", 16)
    make_video("videos/batch/v2.avi", 9)
    out = tmp_path / "frames"
    failures = ef.extract(ef.find_videos([tmp_path / "videos"]), out, k=8, size=(24, 32),
                          workers=1, progress=False)
    assert failures == {}
    listing = json.loads((out / "v1" / ef.FRAME_LIST).read_text())
    expected = [frames.frame_name(i) for i in vio.sample_indices(16, 8)]
    assert listing["frames"] == expected
    assert sorted(p.name for p in (out / "v1").glob("*.png")) == sorted(expected)
    image = cv2.imread(str(out / "v1" / expected[3]))
    assert image.shape == (24, 32, 3)
    assert frame_level_index(image) == vio.sample_indices(16, 8)[3]
    assert (out / "batch" / "v2" / ef.FRAME_LIST).is_file()
    assert not (out / FAILURES).exists()


def test_rerun_skips_finished_videos(tmp_path, make_video, monkeypatch):
    make_video("videos/v1.avi", 10)
    out = tmp_path / "frames"
    ef.extract(ef.find_videos([tmp_path / "videos"]), out, workers=1, progress=False)
    stamp = os.stat(out / "v1" / ef.FRAME_LIST).st_mtime_ns
    make_video("videos/v2.avi", 10)
    calls = []
    real = frames.sample_video
    monkeypatch.setattr(frames, "sample_video", lambda path, *a: calls.append(path.name) or real(path, *a))
    ef.extract(ef.find_videos([tmp_path / "videos"]), out, workers=0, progress=False)
    assert calls == ["v2.avi"]
    assert os.stat(out / "v1" / ef.FRAME_LIST).st_mtime_ns == stamp


def test_interrupted_write_leaves_no_half_folder(tmp_path, make_video, monkeypatch):
    sampled = vio.sample_video(make_video("v.avi", 10), k=8, size=(16, 16))
    real_write = frames.write_png
    written = []

    def crash_after_three(path, image):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        real_write(path, image)

    monkeypatch.setattr(frames, "write_png", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        frames.write_frames(sampled, tmp_path / "out" / "v")
    assert len(written) == 3
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_files_are_reported_and_the_rest_done(tmp_path, make_video, capsys):
    videos = tmp_path / "videos"
    make_video("videos/good.avi", 12)
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("this is not a video\n" * 50)
    (videos / "noise.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    out = tmp_path / "frames"
    code = ef.main(["--videos", str(videos), "--out", str(out), "--workers", "2", "--size", "16", "20"])
    assert code == 1
    assert (out / "good" / ef.FRAME_LIST).is_file()
    rows = (out / FAILURES).read_text().splitlines()
    assert rows[0] == "video_id,kind,problem"
    assert {r.split(",")[0] for r in rows[1:]} == {"empty", "text", "noise"}
    assert "empty.mp4" in (out / FAILURES).read_text()
    assert {r.split(",")[1] for r in rows[1:]} == {"empty-file", "not-media"}
    err = capsys.readouterr().err
    assert "3 failed" in err and "text.mp4" in err
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_duplicate_ids_are_reported(tmp_path, make_video):
    a = make_video("x/v.avi", 8)
    b = make_video("y/v.avi", 8)
    failures = ef.extract([("v", a), ("v", b)], tmp_path / "out", workers=1, progress=False)
    assert list(failures) == ["v"] and "already has the id" in str(failures["v"])
    assert failures["v"].kind == ef.DUPLICATE_ID
    assert (tmp_path / "out" / "v" / ef.FRAME_LIST).is_file()


def test_cli_needs_inputs_or_dataset(capsys):
    with pytest.raises(SystemExit):
        ef.parse_args([])
    with pytest.raises(SystemExit):
        ef.parse_args(["--dataset", "konvid"])


def test_cli_dataset_mode_reads_label_file(tmp_path, make_video, capsys):
    make_video("konvid/KoNViD_1k_videos/111.mp4", 10, codec="mp4v")
    make_video("konvid/KoNViD_1k_videos/222.mp4", 10, codec="mp4v")
    labels = tmp_path / "KoNViD_1k_mos.csv"
    labels.write_text("flickr_id,mos\n111,3.2\n222,4.1\n333,2.0\n")
    out = tmp_path / "frames"
    code = ef.main(["--dataset", "konvid", "--labels", str(labels), "--root",
                    str(tmp_path / "konvid"), "--out", str(out), "--workers", "1"])
    assert sorted(p.name for p in out.iterdir()) == ["111", "222"]
    # the row without a video is left out, reported at the end, and the status says so
    assert code == 1
    err = capsys.readouterr().err
    assert "left out" in err and "1 of 3 video(s) not found" in err and "333" in err
