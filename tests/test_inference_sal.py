"""inference_sal.py and the shared inference helpers of sal_withreg.py, with a width-4 network
trained for one epoch on 32x48 synthetic DHF1K videos."""
from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest
import torch

import inference_sal
from dagr import overlays
from dagr.inference import frame_windows
from dagr.overlays import colour_bar, overlay
import train_sal
from conftest import encode_video, write_video
from dataloader import frame_files, load_stored_clip
from extract_frame import extract
from fakes import TINY_SIZE, tiny_config, tiny_dhf1k
from pictures import overlay_size
from dagr.checkpoints import load_checkpoint, save_checkpoint
from dagr.inference import predict_maps
from sal_withreg import build_saliency_model
from dagr.video_io import VideoReader, count_frames

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):  # noqa: F811 (fixture argument)
    """(checkpoint, stored-frames folder): a one-epoch model, and the 8 stored frames of two
    demo videos (one of 5 frames, so frames repeat) plus a folder whose frames are missing."""
    base = tmp_path_factory.mktemp("inference_sal")
    root = tiny_dhf1k(base / "DHF1K")
    checkpoint = train_sal.train(tiny_config(root, base / "run", "--epochs", "1"))
    frames = base / "frames"
    short = write_video(base / "short.avi", 5, size=TINY_SIZE)
    assert not extract([("600", root / "video" / "600.AVI"), ("batch/short", short)], frames,
                       size=TINY_SIZE, workers=1, progress=False)
    (frames / "broken").mkdir()
    (frames / "broken" / "frames.json").write_text(json.dumps({"frames": ["00000.png"] * 8}))
    return checkpoint, frames


def run(checkpoint, *options: str) -> int:
    return inference_sal.main(["--checkpoint", str(checkpoint), "--batch-size", "2",
                               "--workers", "0", "--device", "cpu", *options])


@pytest.mark.slow
def test_maps_pair_with_frames_by_name_are_8_bit_and_finished_videos_are_skipped(setup, tmp_path, capsys) -> None:
    checkpoint, frames = setup
    out = tmp_path / "maps"
    assert run(checkpoint, "--frames", str(frames), "--out", str(out), "--overlay") == 1
    assert "broken" in capsys.readouterr().err
    model = inference_sal.load_saliency_model(checkpoint, "cpu")
    for video_id in ("600", "batch/short"):
        names = frame_files(frames / video_id)
        assert sorted(p.name for p in (out / video_id).iterdir()) == sorted(set(names))
        clip, _ = load_stored_clip(frames / video_id, TINY_SIZE)
        expected = predict_maps(model, clip[None], "cpu")[0].numpy()
        for t, name in enumerate(names):
            saliency = cv2.imread(str(out / video_id / name), cv2.IMREAD_UNCHANGED)
            assert saliency.dtype == np.uint8 and saliency.shape == TINY_SIZE
            assert saliency.min() == 0 and saliency.max() == 255
            if names.index(name) == t:  # a repeated frame keeps its first map
                assert np.abs(saliency.astype(int) - expected[t]).max() <= 1
            heat = cv2.imread(str(tmp_path / "maps_overlays" / video_id / name), cv2.IMREAD_UNCHANGED)
            assert heat.shape == (*overlay_size(*TINY_SIZE), 3)
    assert not (out / "broken").exists()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "600").iterdir()}
    for p in (out / "batch" / "short").iterdir():
        p.unlink()
    assert run(checkpoint, "--frames", str(frames), "--out", str(out), "--overlay") == 1
    assert "1 video(s) already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "600").iterdir()} == stamps
    assert sorted(p.name for p in (out / "batch" / "short").iterdir()) == \
        sorted(set(frame_files(frames / "batch" / "short")))


class FrameOffset(torch.nn.Module):
    """`model` with a different constant added to each frame's logits: a change that a
    per-frame softmax loss cannot see, so the stored maps must not see it either."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + 3.0 * torch.arange(x.shape[2]).view(1, 1, -1, 1, 1)


def test_predict_maps_permutes_clips_and_normalises_each_frame() -> None:
    torch.manual_seed(0)
    model = build_saliency_model(4, 2).eval()
    clips = torch.rand(2, 8, 3, 20, 30)  # (B, T, 3, H, W)
    maps = predict_maps(model, clips, "cpu")
    with torch.no_grad():
        logits = model(clips.permute(0, 2, 1, 3, 4))[:, 0]
    # log-probabilities of each frame's pixels, independent of a per-frame logit offset
    log_p = logits - logits.logsumexp(dim=(-2, -1), keepdim=True)
    probability = torch.sigmoid(log_p)
    low = probability.amin(dim=(-2, -1), keepdim=True)
    high = probability.amax(dim=(-2, -1), keepdim=True)
    assert maps.dtype == torch.uint8 and maps.shape == (2, 8, 20, 30)
    expected = ((probability - low) / (high - low) * 255).round()
    assert (maps.float() - expected).abs().max() <= 1  # rounding of a different float path
    assert predict_maps(model, clips, "cpu", size=(40, 45)).shape == (2, 8, 40, 45)
    assert (predict_maps(FrameOffset(model), clips, "cpu").int() - maps.int()).abs().max() <= 1


def test_folded_batchnorm_gives_the_same_maps(setup) -> None:
    checkpoint, frames = setup
    clip, _ = load_stored_clip(frames / "600", TINY_SIZE)
    folded = predict_maps(inference_sal.load_saliency_model(checkpoint, "cpu"), clip[None], "cpu")
    plain = predict_maps(inference_sal.load_saliency_model(checkpoint, "cpu", fold_bn=False),
                         clip[None], "cpu")
    assert (folded.int() - plain.int()).abs().max() <= 1


def test_a_checkpoint_of_another_kind_is_refused(setup, tmp_path, capsys) -> None:
    checkpoint, frames = setup
    save_checkpoint(tmp_path / "quality.pt", load_checkpoint(checkpoint) | {"kind": "quality"})
    with pytest.raises(ValueError, match="quality.pt: this is a 'quality' checkpoint, not a saliency"):
        inference_sal.load_saliency_model(tmp_path / "quality.pt", "cpu")
    assert run(tmp_path / "quality.pt", "--frames", str(frames), "--out", str(tmp_path / "o")) == 2
    assert "not a saliency checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("length", [3, 8, 13, 16])
def test_frame_windows_cover_every_frame_once(length: int) -> None:
    covered = []
    for window, fresh in frame_windows(range(length), 8):
        assert len(window) == 8 and list(window) == sorted(window)
        covered += [window[t] for t in fresh]
    assert covered == list(range(length))


def test_all_frames_renders_an_overlay_video_of_every_decodable_frame(setup, tmp_path) -> None:
    checkpoint, _ = setup
    videos = [write_video(tmp_path / "in" / f"{name}.avi", n, size=(36, 52))
              for name, n in (("long", 13), ("short", 5))]
    out = tmp_path / "renders"
    assert run(checkpoint, "--videos", str(tmp_path / "in"), "--all-frames", "--out", str(out)) == 0
    height, width = overlay_size(36, 52)  # upscaled to be readable
    even_width = width // 2 * 2  # 4:2:0 chroma
    for source in videos:
        rendered = out / f"{source.stem}.mp4"
        assert count_frames(rendered) == count_frames(source)
        with av.open(str(rendered)) as container:  # H.264 in yuv420p: what browsers play
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
            decoded = [frame.to_ndarray(format="bgr24") for frame in container.decode(stream)]
        assert len(decoded) == count_frames(source)
        assert decoded[0].shape == (height, even_width, 3)
    assert sorted(p.name for p in out.iterdir()) == ["long.mp4", "short.mp4"]  # no temporary left


def test_renders_av1_and_rotated_videos_in_display_orientation(setup, tmp_path) -> None:
    """--videos decodes through video_io: an AV1 file renders, and a 90-degree rotated MP4
    renders upright (as tall as the source is wide)."""
    checkpoint, _ = setup
    encode_video(tmp_path / "in" / "av1.mkv", "libsvtav1", 5, size=(32, 48))
    encode_video(tmp_path / "in" / "turned.mp4", "libx264", 4, size=(32, 48), rotation=90)
    out = tmp_path / "renders"
    assert run(checkpoint, "--videos", str(tmp_path / "in"), "--all-frames", "--out", str(out)) == 0
    for name, frames, (height, width) in (("av1", 5, (32, 48)), ("turned", 4, (48, 32))):
        with VideoReader(out / f"{name}.mp4") as video:
            rendered = list(video.arrays())
        height, shown = overlay_size(height, width)  # upscaled, the bar on the right
        assert len(rendered) == frames and rendered[0].shape == (height, shown - shown % 2, 3)


@pytest.mark.parametrize("height", [36, 48, 224, 1080])
def test_overlays_are_readable_and_carry_a_colour_bar_from_bottom_to_top(height: int) -> None:
    frame = np.full((height, 64, 3), 100, np.uint8)
    shown = overlay(frame, np.zeros((height // 2, 32), np.uint8))
    drawn = max(height, overlays.MIN_HEIGHT)  # small frames are upscaled, aspect kept
    assert shown.shape == (*overlay_size(height, 64), 3) and shown.shape[0] == drawn
    bar = colour_bar(drawn)
    assert np.array_equal(shown[:, -bar.shape[1]:], bar)
    strip = bar[:, bar.shape[1] // 8]  # a column through the colour strip
    hot = cv2.applyColorMap(np.array([[255]], np.uint8), overlays.COLORMAP)[0, 0]
    cold = cv2.applyColorMap(np.array([[0]], np.uint8), overlays.COLORMAP)[0, 0]
    painted = np.flatnonzero(strip.any(axis=1))  # the strip's rows, top to bottom
    assert len(painted) > 0.8 * drawn
    assert np.array_equal(strip[painted[0]], hot) and np.array_equal(strip[painted[-1]], cold)


@pytest.mark.parametrize("scale", sorted(overlays.SCALES))
def test_the_colour_bar_labels_its_ends_with_what_they_mean(scale: str) -> None:
    assert overlays.SCALES == {"frame": (("frame", "max"), ("frame", "min")),
                               "fixed": (("8x", "mean"), ("0",))}
    bar = colour_bar(overlays.MIN_HEIGHT, scale)
    font = overlays.MIN_HEIGHT / overlays.BAR_TEXT_HEIGHTS
    widest = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, font, 1)[0][0]
                 for end in overlays.SCALES[scale] for line in end)
    labels = bar[:, -widest:]  # the label column, right of the strip
    white = np.flatnonzero((labels > 200).all(axis=2).any(axis=1))  # rows with label text
    assert white.min() < overlays.MIN_HEIGHT // 4 and white.max() > overlays.MIN_HEIGHT * 3 // 4
    other = colour_bar(overlays.MIN_HEIGHT, "fixed" if scale == "frame" else "frame")
    assert not np.array_equal(bar, other)


def test_the_fixed_scale_gives_equal_saliency_equal_colours_in_every_frame() -> None:
    """Frame scale: every frame's peak is the hottest colour, however weak. Fixed scale: a
    pixel's colour follows its saliency relative to its frame's mean, whatever the frame."""
    logits = torch.zeros(3, 8, 8)
    logits[0, 2:4, 2:4] = 1.0          # a weak peak
    logits[1, 2:4, 2:4] = 3.0          # a strong one
    logits[2] = logits[1] + 5.0        # the strong one, offset (the softmax does not see it)
    by_frame, fixed = overlays.shown_maps(logits, "frame"), overlays.shown_maps(logits, "fixed")
    assert by_frame[0, 2, 2] == by_frame[1, 2, 2] == 255  # colours do not compare
    relative = torch.softmax(logits.flatten(1), 1).view_as(logits) * 64
    expected = (relative / overlays.FIXED_SCALE_MAX).clamp(0, 1).mul(255).round()
    assert torch.equal(fixed.float(), expected)
    assert fixed[0, 2, 2] < fixed[1, 2, 2] and torch.equal(fixed[1], fixed[2])


def test_overlays_say_where_they_went_and_take_the_fixed_scale(setup, tmp_path, capsys) -> None:
    checkpoint, frames = setup
    out = tmp_path / "maps"
    assert run(checkpoint, "--frames", str(frames), "--out", str(out), "--overlay",
               "--overlay-scale", "fixed") == 1  # the broken video fails as before
    assert f"overlays written to {tmp_path / 'maps_overlays'}/" in capsys.readouterr().out
    name = frame_files(frames / "600")[0]
    drawn = cv2.imread(str(tmp_path / "maps_overlays" / "600" / name))
    assert drawn.shape == (*overlay_size(*TINY_SIZE, "fixed"), 3)


def test_register_attention_draws_each_register_over_each_frame(setup, tmp_path, capsys) -> None:
    checkpoint, frames = setup
    out = tmp_path / "maps"
    assert run(checkpoint, "--frames", str(frames), "--out", str(out),
               "--register-attention") == 1  # the broken video fails as before
    drawn = inference_sal.register_folder(out) / "600"
    names = sorted(set(frame_files(frames / "600")))
    registers = load_checkpoint(checkpoint)["model_kwargs"]["registers"]
    assert sorted(p.name for p in drawn.iterdir()) == sorted(
        inference_sal.register_file(name, k) for name in names for k in range(registers))
    first = cv2.imread(str(drawn / inference_sal.register_file(names[0], 0)))
    assert first.shape == (*overlay_size(*TINY_SIZE), 3)
    assert first.std() > 0
    # a network without attention registers has nothing to draw: one line, exit 2
    baseline = tmp_path / "baseline.pt"
    save_checkpoint(baseline, {**load_checkpoint(checkpoint), "model_kwargs": {
        "channels": 4, "registers": 0}, "model_state": build_saliency_model(4, 0).state_dict()})
    capsys.readouterr()
    assert run(baseline, "--frames", str(frames), "--out", str(tmp_path / "b"),
               "--register-attention") == 2
    assert "no attention registers" in capsys.readouterr().err


def test_every_output_is_checked_before_the_network_loads(tmp_path, capsys):
    (tmp_path / "maps_overlays").write_text("a file where the overlays would go")
    code = inference_sal.main(["--checkpoint", str(tmp_path / "absent.pt"), "--frames",
                               str(tmp_path), "--out", str(tmp_path / "maps"), "--overlay",
                               "--device", "cpu"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'maps_overlays'}: is a "
                                               "file; --out names a folder here")
    assert not (tmp_path / "maps").exists()


def test_overlay_is_for_frames_mode(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        inference_sal.parse_args(["--videos", str(tmp_path), "--all-frames", "--overlay"])
    assert stopped.value.code == 2
