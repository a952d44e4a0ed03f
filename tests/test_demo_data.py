"""demo_data.py: the synthetic DHF1K-layout saliency set and KoNViD-1k-layout quality set."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from dagr import demo_data as dd
from dagr import global_context as gc
from dagr.datasets import read_saliency_set, read_table

SIZE = (32, 56)


@pytest.fixture(scope="module")
def saliency_set(tmp_path_factory):
    return dd.write_saliency_set(tmp_path_factory.mktemp("dhf1k"), n_train=2, n_val=1, frames=6,
                                 size=SIZE, seed=3)


@pytest.fixture(scope="module")
def quality_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("konvid")
    return root, dd.write_quality_set(root, n_videos=8, frames=4, size=SIZE, seed=3)


def read_avi(path) -> np.ndarray:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.stack(frames)
        frames.append(frame)


def test_saliency_set_is_read_by_the_dhf1k_reader(saliency_set):
    videos = {v.video_id: v for v in read_saliency_set("dhf1k", saliency_set)}
    assert sorted(videos) == ["0599", "0600", "0601"]
    assert [videos[k].split for k in sorted(videos)] == ["train", "train", "val"]
    assert all(len(v) == 6 for v in videos.values())
    assert (saliency_set / "video" / "601.AVI").is_file()
    assert (saliency_set / "annotation" / "0601" / "fixation" / "0006.png").is_file()


def test_saliency_ground_truth_sits_on_the_moving_object(saliency_set):
    """Read back from the files: the map's peak and the fixations lie where the frames change
    (the only moving thing is the salient disk), not on the still look-alikes."""
    frames = read_avi(saliency_set / "video" / "600.AVI").astype(float)
    folder = saliency_set / "annotation" / "0600"
    radius = dd.object_radius(SIZE)
    for t in range(1, len(frames)):
        moved = np.abs(frames[t] - frames[t - 1]).max(axis=-1) > 60  # well above MJPEG error
        density = cv2.imread(str(folder / "maps" / f"{t + 1:04d}.png"), cv2.IMREAD_GRAYSCALE)
        fixated = cv2.imread(str(folder / "fixation" / f"{t + 1:04d}.png"), cv2.IMREAD_GRAYSCALE) > 0
        peak = np.array(np.unravel_index(density.argmax(), density.shape))
        rows, cols = np.nonzero(moved)
        distance = np.hypot(rows - peak[0], cols - peak[1])
        assert distance.min() <= radius  # the peak is on the disk that moved ...
        assert distance.max() <= 3 * radius + 2  # ... and nothing else moved
        assert 3 <= fixated.sum() <= dd.FIXATIONS
        assert density[fixated].mean() > 0.3 * 255  # fixations are drawn from the blob


def test_only_the_mover_moves_and_the_salient_region_is_a_disk_around_it():
    scene = dd.moving_object_scene(5, SIZE, np.random.default_rng(0), radius=4)
    assert scene.frames.shape == (5, *SIZE, 3) and scene.frames.dtype == np.uint8
    assert scene.radius == 4 and scene.centres.shape == (5, 2)
    mover = dd.near(scene.centres, SIZE, scene.radius + 1)
    changed = (scene.frames[1:] != scene.frames[:1]).any(axis=-1)
    assert changed.any() and not (changed & ~(mover[1:] | mover[:1])).any()
    salient = dd.region_mask(scene, "salient") > 0
    rows, cols = np.mgrid[:SIZE[0], :SIZE[1]]
    for t, (row, col) in enumerate(scene.centres):
        distance = np.hypot(rows - row, cols - col)
        assert np.array_equal(salient[t], distance <= dd.REGION_REACH * scene.radius)
    assert np.array_equal(dd.region_mask(scene, "background") > 0, ~salient)
    assert (dd.region_mask(scene, "whole") == 1).all()


def test_quality_set_is_read_by_the_konvid_reader(quality_set):
    root, labels = quality_set
    assert labels == root / "KoNViD_1k_mos.csv"
    assert pd.read_csv(labels).columns.tolist() == ["flickr_id", "mos"]
    table = read_table("konvid", labels, root / "KoNViD_1k_videos")
    assert len(table) == 8 and table["path"].notna().all()
    assert table["path"].str.endswith(".mp4").all()
    capture = cv2.VideoCapture(table["path"].iloc[0])
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    assert (capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == SIZE


def test_quality_mos_follows_the_stated_formula(quality_set):
    root, labels = quality_set
    details = pd.read_csv(root / "KoNViD_1k_distortions.csv")
    weight = details["region"].map({"whole": 1.0, "salient": 0.5, "background": 0.5, "decoy": 0.1})
    assert np.allclose(details["mos"], 5 - 4 * details["strength"] * weight, atol=2e-4)
    assert np.allclose(pd.read_csv(labels)["mos"], details["mos"])
    assert details["mos"].between(1, 5).all()
    # kinds take turns, and regions take turns within a kind: half the clips whole-frame
    assert details["kind"].tolist() == ["blur", "noise"] * 4
    assert details["region"].tolist() == [r for r in dd.REGION_TURNS for _ in range(2)]
    assert dd.mos_of(1.0, "whole") == 1.0 and dd.mos_of(0.0, "salient") == 5.0


def test_quality_set_is_seeded_and_extends(quality_set, tmp_path):
    root, labels = quality_set
    smaller = dd.write_quality_set(tmp_path / "a", n_videos=3, frames=4, size=SIZE, seed=3)
    assert pd.read_csv(smaller).equals(pd.read_csv(labels).iloc[:3])
    other = dd.write_quality_set(tmp_path / "b", n_videos=3, frames=4, size=SIZE, seed=4)
    assert not pd.read_csv(other)["mos"].equals(pd.read_csv(smaller)["mos"])


@pytest.mark.parametrize("region", ["whole", "salient", "background", "decoy"])
@pytest.mark.parametrize("kind", ["blur", "noise", "blocking"])
def test_distortions_stay_inside_their_region(kind, region):
    scene = dd.moving_object_scene(4, SIZE, np.random.default_rng(1))
    clip = dd.distorted_clip(scene, kind, region, 1.0, np.random.default_rng(2))
    changed = (clip != scene.frames).any(axis=-1)
    inside = dd.region_mask(scene, region) > 0
    assert changed[inside].mean() > 0.5
    assert not changed[~inside].any()
    untouched = dd.distorted_clip(scene, kind, region, 0.0, np.random.default_rng(2))
    assert np.array_equal(untouched, scene.frames)


def test_stronger_distortion_changes_more():
    scene = dd.moving_object_scene(4, SIZE, np.random.default_rng(1))
    for kind in ("blur", "noise", "blocking"):
        errors = [np.abs(dd.distorted_clip(scene, kind, "whole", s, np.random.default_rng(2))
                         .astype(float) - scene.frames).mean() for s in (0.2, 0.5, 1.0)]
        assert errors[0] < errors[1] < errors[2], (kind, errors)


def test_freeze_repeats_a_run_of_frames_over_the_whole_frame():
    scene = dd.moving_object_scene(9, SIZE, np.random.default_rng(1))
    clip = dd.distorted_clip(scene, "freeze", "salient", 0.5, np.random.default_rng(2))
    same = [np.array_equal(clip[t], clip[t - 1]) for t in range(1, 9)]
    assert sum(same) == 4  # round(0.5 * 8) frames repeat the one before them
    assert dd.clip_design(7, dd.KINDS, dd.REGION_TURNS) == ("freeze", "whole")


def test_unknown_names_are_refused():
    scene = dd.moving_object_scene(2, SIZE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="region"):
        dd.region_mask(scene, "elsewhere")
    with pytest.raises(ValueError, match="kind"):
        dd.distorted_clip(scene, "jpeg", "whole", 0.5, np.random.default_rng(0))


def test_a_decoy_is_a_look_alike_the_same_size_as_the_salient_disk():
    scene = gc.odd_one_out_scene(4, gc.VARIANTS["palette"]["size"], np.random.default_rng(3))
    salient, decoy = (dd.region_mask(scene, region, dd.DECOY_REACH) > 0
                      for region in ("salient", "decoy"))
    assert not (salient & decoy).any()  # two regions alike in size, on the strip's borders
    assert salient.sum() == pytest.approx(decoy.sum(), rel=0.25)
    row, col = np.round(scene.decoy[0]).astype(int)
    assert decoy[0, row, col] and salient[0, *np.round(scene.centres[0]).astype(int)]
    assert scene.maps[0, row, col] < 20 < 200 < scene.maps[0].max()  # nobody looks at it
    with pytest.raises(ValueError, match="decoy"):
        dd.region_mask(dd.Scene(scene.frames, scene.maps, scene.fixations, scene.centres,
                                scene.radius), "decoy")


def test_the_demos_quality_set_puts_the_same_defect_on_the_salient_disk_or_its_decoy(tmp_path):
    labels = dd.write_quality_set(tmp_path, n_videos=8, frames=2, size=(24, 384), seed=0,
                                  regions=dd.DECOY_TURNS, scene=gc.odd_one_out_scene,
                                  weights=dd.DECOY_WEIGHT, reach=dd.DECOY_REACH)
    details = pd.read_csv(tmp_path / dd.QUALITY_DETAILS)
    assert details["region"].tolist() == [r for r in dd.DECOY_TURNS for _ in range(2)]
    weight = details["region"].map({"whole": 1.0, "salient": 1.0, "decoy": 0.1})
    assert np.allclose(details["mos"], 5 - 4 * details["strength"] * weight, atol=2e-4)
    assert np.allclose(pd.read_csv(labels)["mos"], details["mos"])
