"""video_io: decoding every codec through PyAV, sampling, rotation and failure kinds. The videos
are made here with PyAV (AV1, HEVC, VP9, H.264) or OpenCV; none comes from outside."""
import pickle
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from dagr import video_io as vio
from conftest import PYAV_STEP, encode_video, frame_level_index, pyav_level


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def unknown_codec(path: Path) -> Path:
    """A valid MPEG-4 AVI whose codec tags are rewritten to one no decoder knows."""
    encode_video(path, "mpeg4", 4)
    data = path.read_bytes()
    for tag in (b"FMP4", b"fmp4"):
        data = data.replace(tag, b"ZQZQ")
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name,codec", [("av1.mkv", "libsvtav1"), ("hevc.mp4", "hevc"),
                                        ("vp9.webm", "libvpx-vp9"), ("h264.mov", "libx264")])
def test_every_codec_samples_the_frames_at_the_sampled_positions(tmp_path, name, codec):
    path = encode_video(tmp_path / name, codec, 12)
    sampled = vio.sample_video(path, k=5, size=(32, 48))
    assert sampled.frames.shape == (5, 32, 48, 3) and sampled.decoded == 12
    assert sampled.indices == vio.sample_indices(12, 5) == [0, 3, 6, 8, 11]
    assert [pyav_level(f) for f in sampled.frames] == sampled.indices
    assert (np.abs(sampled.frames[:, 16:, 24:].astype(int) - PYAV_STEP * np.array(sampled.indices)
                   [:, None, None, None]) <= 4).all()
    corner = sampled.frames[-1, 4, 8]  # red in RGB order
    assert corner[0] > 200 and corner[2] < 60
    assert not sampled.notes  # Matroska/WebM declare no count: estimated, and right


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotation_metadata_is_honoured_as_opencv_does(tmp_path, rotation):
    path = encode_video(tmp_path / f"rot{rotation}.mp4", "libx264", 3, size=(32, 48), rotation=rotation)
    mine = vio.read_frames_at(path, [1], None)[0]
    capture = cv2.VideoCapture(str(path))
    ok, theirs = capture.read()
    ok, theirs = capture.read()
    capture.release()
    assert ok and mine.shape == theirs.shape == ((32, 48, 3) if rotation == 180 else (48, 32, 3))
    assert np.abs(mine.astype(int) - cv2.cvtColor(theirs, cv2.COLOR_BGR2RGB)).max() <= 2


def kind_of(path) -> vio.VideoError:
    with pytest.raises(vio.VideoError) as caught:
        vio.sample_video(path)
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value


def test_each_failure_kind_names_the_file_and_the_problem(tmp_path):
    err = kind_of(audio_only(tmp_path / "sound.mp4"))
    assert err.kind == vio.NO_VIDEO and "no video stream" in str(err) and "1 audio" in str(err)
    err = kind_of(unknown_codec(tmp_path / "odd.avi"))
    assert err.kind == vio.UNSUPPORTED_CODEC and "ZQZQ" in str(err) and "no decoder" in str(err)
    (tmp_path / "empty.mp4").write_bytes(b"")
    err = kind_of(tmp_path / "empty.mp4")
    assert err.kind == vio.EMPTY and "empty file" in str(err)
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    err = kind_of(tmp_path / "notes.mp4")
    assert err.kind == vio.NOT_MEDIA and "not a media file" in str(err)
    assert kind_of(tmp_path / "gone.mp4").kind == vio.MISSING


def test_a_stream_without_decodable_frames_is_damaged(tmp_path, make_video):
    path = make_video("cut.avi", 6)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"movi") + 4])  # header whole, frame data gone
    err = kind_of(path)
    assert err.kind == vio.DAMAGED and "0 frame(s) decode" in str(err)


def test_frames_past_the_end_are_damaged_with_the_count(tmp_path):
    path = encode_video(tmp_path / "short.mkv", "libsvtav1", 4)
    with pytest.raises(vio.VideoError) as caught:
        vio.read_frames_at(path, [1, 6, 9], None)
    assert caught.value.kind == vio.DAMAGED
    assert "6, 9 wanted but 4 frame(s) decode" in str(caught.value)
    frames = vio.read_frames_at(path, [3, 0, 3], (16, 16))
    assert frames.shape == (3, 16, 16, 3) and [pyav_level(f) for f in frames] == [3, 0, 3]


def test_video_error_survives_pickling():
    err = pickle.loads(pickle.dumps(vio.VideoError("a.mp4", vio.DAMAGED, "cut short")))
    assert (err.kind, str(err)) == (vio.DAMAGED, "a.mp4: cut short")


def test_reader_gives_every_frame_and_the_rate(tmp_path):
    path = encode_video(tmp_path / "all.webm", "libvpx-vp9", 7)
    with vio.VideoReader(path) as video:
        assert video.fps == 10.0 and video.declared == 0 and video.estimated == 7
        bgr = list(video.arrays((16, 16), order="bgr"))
    assert [pyav_level(f) for f in bgr] == list(range(7)) and bgr[0][1, 1, 2] > 200  # red, BGR


def test_sample_indices_uniform_and_repeating():
    assert vio.sample_indices(30, 8) == [int(round(x)) for x in np.linspace(0, 29, 8)]
    assert vio.sample_indices(8, 8) == list(range(8))
    short = vio.sample_indices(3, 8)
    assert len(short) == 8 and set(short) == {0, 1, 2} and short == sorted(short)
    with pytest.raises(ValueError):
        vio.sample_indices(0, 8)


def test_sample_video_keeps_the_frames_of_the_chosen_indices(make_video):
    path = make_video("clip.avi", 25)
    sampled = vio.sample_video(path, k=8, size=(32, 40))
    assert sampled.frames.shape == (8, 32, 40, 3) and sampled.frames.dtype == np.uint8
    assert sampled.indices == vio.sample_indices(25, 8)
    assert [frame_level_index(f) for f in sampled.frames] == sampled.indices
    # RGB order: the marked corner is red
    corner = sampled.frames[0, 2, 2]
    assert corner[0] > 200 and corner[2] < 60
    assert sampled.decoded == 25 and not sampled.notes


def test_short_video_repeats_frames_and_says_so(make_video):
    sampled = vio.sample_video(make_video("short.avi", 3), k=8, size=None)
    assert [frame_level_index(f) for f in sampled.frames] == vio.sample_indices(3, 8)
    assert any("repeated" in note for note in sampled.notes)


def declaring(monkeypatch, count: int) -> None:
    """Make every container claim `count` frames."""
    monkeypatch.setattr(vio, "declared_frames", lambda stream: count)


def test_lying_frame_count_is_resampled_over_decoded_frames(make_video, monkeypatch):
    path = make_video("lies.avi", 20)
    declaring(monkeypatch, 90)
    sampled = vio.sample_video(path, k=8, size=None)
    assert sampled.declared == 90 and sampled.decoded == 20
    assert sampled.indices == vio.sample_indices(20, 8)
    assert [frame_level_index(f) for f in sampled.frames] == sampled.indices
    assert "declares 90" in sampled.notes[0]


def test_understated_frame_count_is_recounted(make_video, monkeypatch):
    path = make_video("more.avi", 20)
    declaring(monkeypatch, 10)
    sampled = vio.sample_video(path, k=8, size=None)
    assert sampled.decoded == 20 and sampled.indices[-1] == 19
    assert [frame_level_index(f) for f in sampled.frames] == sampled.indices


def test_truncated_video_keeps_what_decodes(tmp_path, make_video):
    path = make_video("cut.avi", 40, size=(64, 80))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        sampled = vio.sample_video(path, k=8, size=None)
    except vio.VideoError as err:  # a cut that removes the header is a reported failure
        assert "cut.avi" in str(err)
        return
    assert 0 < sampled.decoded < 40
    # the last decodable frame may itself be cut short, so compare the others
    assert [frame_level_index(f) for f in sampled.frames[:-1]] == sampled.indices[:-1]


def test_real_lying_container_if_available():
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "tree_count_lies.avi"
    if not path.is_file():
        pytest.skip("../shared/data not present")
    sampled = vio.sample_video(path, size=(224, 398))
    assert sampled.declared == 444 and sampled.decoded == 68
    assert sampled.indices == vio.sample_indices(68, 8)
    assert sampled.frames.shape == (8, 224, 398, 3)


def test_the_main_video_stream_is_sampled_not_the_first(tmp_path):
    """A Matroska file whose first video stream is a one-picture MJPEG (cover art, say)."""
    path = tmp_path / "with_cover.mkv"
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width = cover.height = 32
        cover.pix_fmt = "yuvj420p"
        video = container.add_stream("libx264", rate=10)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 255, np.uint8), format="rgb24")
        container.mux(cover.encode(picture))
        container.mux(cover.encode())
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), PYAV_STEP * i, np.uint8),
                                               format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
    sampled = vio.sample_video(path, k=3)
    assert sampled.decoded == 6 and [pyav_level(f) for f in sampled.frames] == [0, 2, 5]
