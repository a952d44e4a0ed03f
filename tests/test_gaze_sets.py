"""The image eye-tracking readers of dagr/gaze_sets.py, each on a tiny copy of its publisher's
layout built in tmp_path: ids, splits, the points or maps they give, and their messages on bad
files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import dataloader as dl
import metrics
from dagr.datasets import FOLDS, SALIENCY_SETS, read_saliency_set, saliency_videos
from dagr.gaze_sets import UNSPLIT
from dagr.images import write_png
from dagr.labels import LabelFileError, reported_problems

SIZE = (20, 30)  # (H, W) of every image here, and of the clips: one cell per pixel


def picture(path: Path, image: np.ndarray | None = None) -> Path:
    """Write `image` (a flat grey image of SIZE when None) under `path`, folders included.
    PNG bytes whatever the suffix: OpenCV reads them by content, and a binary map stays exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.full((*SIZE, 3), 90, np.uint8) if image is None else image)
    return path


def blob(row: int, col: int) -> np.ndarray:
    """A density map of SIZE whose maximum is at (row, col)."""
    image = np.zeros(SIZE, np.uint8)
    image[row - 2:row + 3, col - 2:col + 3] = 100
    image[row, col] = 255
    return image


def point(row: int, col: int) -> np.ndarray:
    """A binary fixation map of SIZE with one fixated pixel."""
    image = np.zeros(SIZE, np.uint8)
    image[row, col] = 255
    return image


def annotation(video: dl.SaliencyVideo) -> tuple[np.ndarray, np.ndarray]:
    """(density, fixations) of a still image's one frame, at SIZE, as training reads them."""
    item = dl.SaliencyClipDataset([video], clip_len=1, size=SIZE)[0]
    return item["maps"][0, 0].numpy(), item["fixations"][0, 0].numpy()


def assert_peak_and_point(video: dl.SaliencyVideo, row: int, col: int) -> None:
    density, fixations = annotation(video)
    assert fixations[row, col] == 1
    assert np.unravel_index(density.argmax(), SIZE) == (row, col)


def test_the_three_sets_are_registered_as_still_images():
    for name in ("salicon", "mit1003", "cat2000"):
        assert SALIENCY_SETS[name].still


# ----------------------------------------------------------------------------- SALICON

def salicon_json(path: Path, images: list, annotations: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))


def write_salicon(root: Path, folder: str = "fixations") -> None:
    """One image a split; two workers, [row 3, col 5] twice and [row 10, col 20] once."""
    for split, number in (("train", 9), ("val", 42)):
        name = f"COCO_{split}2014_{number:012d}.jpg"
        picture(root / "images" / split / name)
        salicon_json(root / folder / f"fixations_{split}2014.json",
                     [{"id": number, "file_name": name, "width": 30, "height": 20}],
                     [{"image_id": number, "worker_id": 1, "fixations": [[3, 5]]},
                      {"image_id": number, "worker_id": 2, "fixations": [[3, 5], [10, 20]]}])


@pytest.mark.parametrize("folder", ["fixations", "."])
def test_salicon_fixations_become_zero_based_points(tmp_path, folder):
    write_salicon(tmp_path, folder)
    videos = read_saliency_set("salicon", tmp_path)
    assert [(v.video_id, v.split) for v in videos] == [
        ("COCO_train2014_000000000009", "train"), ("COCO_val2014_000000000042", "val")]
    # [row, col] 1-based -> x = col - 1, y = row - 1
    assert videos[0].points[0].tolist() == [[4, 2], [4, 2], [19, 9]]
    assert videos[0].maps == [] and videos[0].fixations == []
    density, fixations = annotation(videos[0])
    assert np.argwhere(fixations).tolist() == [[2, 4], [9, 19]]
    assert np.unravel_index(density.argmax(), SIZE) == (2, 4)  # two fixations there, one at (9, 19)


def test_salicon_bad_entries_are_reported_and_left_out(tmp_path, capsys):
    write_salicon(tmp_path)
    val = tmp_path / "fixations" / "fixations_val2014.json"
    picture(tmp_path / "images" / "val" / "COCO_val2014_000000000050.jpg")  # no worker saw it
    salicon_json(val, [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"},
                       {"id": 43, "file_name": "COCO_val2014_000000000043.jpg"},  # no file
                       {"id": 50, "file_name": "COCO_val2014_000000000050.jpg"},
                       {"file_name": "no_id.jpg"}],
                 [{"image_id": 42, "fixations": [[3, 5]]},
                  {"image_id": 42, "fixations": [[3, 5, 1]]},
                  {"image_id": 43, "fixations": [[1, 1]]},
                  {"image_id": 7, "fixations": [[1, 1]]},
                  "not an annotation"])
    with reported_problems() as problems:
        videos = read_saliency_set("salicon", tmp_path)
    assert [v.video_id for v in videos if v.split == "val"] == ["COCO_val2014_000000000042"]
    assert [v.points[0].tolist() for v in videos if v.split == "val"] == [[[4, 2]]]
    assert problems == [
        f"{val}: 3 malformed entry(ies) left out (images[3], annotations[1], annotations[4])",
        f"{val}: 1 annotation(s) of unknown image ids left out (7)",
        f"{tmp_path / 'images' / 'val'}: 2 image(s) missing or never annotated left out "
        "(COCO_val2014_000000000043.jpg, COCO_val2014_000000000050.jpg)"]
    assert capsys.readouterr().err.count("warning:") == 3


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not a readable JSON file"),
    (json.dumps({"images": []}), "needs the COCO lists 'images' and 'annotations'")])
def test_salicon_unusable_json_names_the_file(tmp_path, text, problem):
    write_salicon(tmp_path)
    train = tmp_path / "fixations" / "fixations_train2014.json"
    train.write_text(text)
    with pytest.raises(LabelFileError, match=f"fixations_train2014.json: {problem}"):
        read_saliency_set("salicon", tmp_path)


def test_salicon_without_its_json_names_where_it_was_looked_for(tmp_path):
    write_salicon(tmp_path)
    (tmp_path / "fixations" / "fixations_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match="fixations_val2014.json: not found"):
        read_saliency_set("salicon", tmp_path)


# ----------------------------------------------------------------------------- MIT1003

def write_mit1003(root: Path, points: str | None) -> None:
    """Images a and b with maps (peak and point at (5, 7)); c without a density map. The
    `_fixPts` maps go in the folder `points`, or nowhere when None."""
    for name in ("a", "b", "c"):
        picture(root / "ALLSTIMULI" / f"{name}.jpeg")
    for name in ("a", "b"):
        picture(root / "ALLFIXATIONMAPS" / f"{name}_fixMap.jpg", blob(5, 7))
        if points:
            picture(root / points / f"{name}_fixPts.jpg", point(5, 7))


@pytest.mark.parametrize("folder", ["ALLFIXATIONS", "ALLFIXATIONMAPS"])
def test_mit1003_maps_and_fixation_points(tmp_path, capsys, folder):
    write_mit1003(tmp_path, folder)
    videos = read_saliency_set("mit1003", tmp_path)
    assert [(v.video_id, v.split) for v in videos] == [("a", UNSPLIT), ("b", UNSPLIT)]
    assert videos[0].fixations == [tmp_path / folder / "a_fixPts.jpg"]
    assert videos[0].points is None
    assert_peak_and_point(videos[0], 5, 7)
    err = capsys.readouterr().err
    assert (f"{tmp_path}: 1 image(s) without a _fixMap density map or _fixPts points left out "
            "(c.jpeg)") in err
    assert "note:" not in err


def test_mit1003_maps_only_copy_notes_that_fixation_metrics_are_left_out(tmp_path, capsys):
    write_mit1003(tmp_path, points=None)
    with reported_problems() as problems:
        videos = read_saliency_set("mit1003", tmp_path)
    assert [v.video_id for v in videos] == ["a", "b"] and videos[0].fixations == []
    assert problems == [f"{tmp_path}: 1 image(s) without a _fixMap density map left out (c.jpeg)"]
    assert (f"note: {tmp_path}: MIT1003 without fixation points (no *_fixPts files): NSS, AUC-J "
            "and s-AUC are left out") in capsys.readouterr().err
    density, fixations = annotation(videos[0])
    assert not fixations.any()
    scores = metrics.saliency_metrics(density, density, fixations)
    assert scores["cc"] == pytest.approx(1.0) and np.isnan(scores["nss"])


def test_mit1003_without_its_maps_folder_names_it(tmp_path):
    picture(tmp_path / "ALLSTIMULI" / "a.jpeg")
    with pytest.raises(FileNotFoundError, match="ALLFIXATIONMAPS: folder not found"):
        read_saliency_set("mit1003", tmp_path)


# ----------------------------------------------------------------------------- CAT2000

def write_cat2000(base: Path) -> None:
    """Action/001 complete (peak and point at (4, 6)), with an Output folder beside it;
    Art/002 with an unreadable .mat, Art/003 without a density map."""
    picture(base / "Stimuli" / "Action" / "001.jpg")
    picture(base / "Stimuli" / "Action" / "Output" / "001_SaliencyMap.jpg")
    picture(base / "FIXATIONMAPS" / "Action" / "001.jpg", blob(4, 6))
    (base / "FIXATIONLOCS" / "Action").mkdir(parents=True)
    scipy.io.savemat(base / "FIXATIONLOCS" / "Action" / "001.mat",
                     {"fixLocs": point(4, 6) > 0})
    for name in ("002", "003"):
        picture(base / "Stimuli" / "Art" / f"{name}.jpg")
    picture(base / "FIXATIONMAPS" / "Art" / "002.jpg", blob(4, 6))
    (base / "FIXATIONLOCS" / "Art").mkdir(parents=True)
    (base / "FIXATIONLOCS" / "Art" / "002.mat").write_bytes(b"not a MATLAB file" * 20)


@pytest.mark.parametrize("given", ["trainSet", "."])
def test_cat2000_categories_maps_and_fixation_locations(tmp_path, capsys, given):
    base = tmp_path / "trainSet"
    write_cat2000(base)
    videos = read_saliency_set("cat2000", tmp_path / given)
    assert [(v.video_id, v.split) for v in videos] == [("Action/001", UNSPLIT)]
    assert videos[0].fixations == [base / "FIXATIONLOCS" / "Action" / "001.mat"]
    assert_peak_and_point(videos[0], 4, 6)
    assert (f"{base}: 2 image(s) without a FIXATIONMAPS map or a readable FIXATIONLOCS .mat "
            "left out (Art/002, Art/003)") in capsys.readouterr().err


def test_cat2000_without_stimuli_names_the_folder(tmp_path):
    (tmp_path / "trainSet" / "FIXATIONMAPS").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"trainSet[/\\]Stimuli: folder not found"):
        read_saliency_set("cat2000", tmp_path)


# ----------------------------------------------------------------------------- SUN500

def sun500(root: Path, cells: np.ndarray, images: int) -> Path:
    """A SUN500 copy: `images` stimuli and the cell array `cells` as tidy/fixations.mat."""
    for number in range(1, images + 1):
        picture(root / "stimuli" / f"{number:03d}.jpg")
    (root / "tidy").mkdir(parents=True)
    scipy.io.savemat(root / "tidy" / "fixations.mat", {"fixations": cells})
    return root


def observers(*points: list[tuple[float, float]]) -> np.ndarray:
    """A cell row: one (n, 4) array of x, y, onset, duration per observer; [] is a missing one."""
    row = np.empty(len(points), dtype=object)
    for i, observer in enumerate(points):
        row[i] = np.array([[x, y, 0.1, 0.2] for x, y in observer]).reshape(-1, 4)
    return row


def test_sun500_joins_the_observers_points_and_leaves_out_images_without_gaze(tmp_path, capsys):
    cells = np.stack([observers([(4.0, 2.0)], [(10.5, 7.2), (4.2, 2.9)]),
                      observers([], []),
                      observers([(1.0, 1.0)], [])])
    root = sun500(tmp_path / "sun500", cells, images=2)  # the third has no stimulus file
    with reported_problems() as problems:
        videos = read_saliency_set("sun500", root)
    assert [v.video_id for v in videos] == ["001"] and videos[0].split == UNSPLIT
    np.testing.assert_allclose(videos[0].points[0], [[4, 2], [10.5, 7.2], [4.2, 2.9]])
    assert problems == [f"{root}: 2 image(s) without a stimulus file or readable fixations "
                        "left out (002.jpg, 003.jpg)"]
    density, fixations = annotation(videos[0])
    assert fixations.sum() == 2 and fixations[2, 4] == fixations[7, 10] == 1
    assert np.unravel_index(density.argmax(), SIZE) == (2, 4)  # two of the three points


@pytest.mark.parametrize("contents", [b"not a mat file", None])
def test_sun500_unusable_fixation_file_names_it(tmp_path, contents):
    root = tmp_path / "sun500"
    (root / "tidy").mkdir(parents=True)
    if contents is None:  # a readable file whose variable is not a cell array
        scipy.io.savemat(root / "tidy" / "fixations.mat", {"fixations": np.zeros((2, 2))})
    else:
        (root / "tidy" / "fixations.mat").write_bytes(contents)
    with pytest.raises(LabelFileError, match="fixations.mat"):
        read_saliency_set("sun500", root)


# ----------------------------------------------------------------------------- fixation table

def test_fixation_table_reads_points_splits_and_reports_bad_rows(tmp_path):
    picture(tmp_path / "set" / "img" / "a.png")
    picture(tmp_path / "set" / "b.jpg")
    (tmp_path / "set" / "fixations.csv").write_text(
        "image,x,y,observer,split\n"
        "img/a.png,5,3,1,train\nimg/a.png,6.5,3,2,train\nb.jpg,1,1,1,Val\n"
        "b.jpg,oops,1,2,val\nmissing.png,1,1,1,train\n")
    with reported_problems() as problems:
        videos = read_saliency_set("fixation-table", tmp_path / "set")
    assert {v.video_id: v.split for v in videos} == {"img/a": "train", "b": "val"}
    np.testing.assert_allclose(videos[1].points[0], [[5, 3], [6.5, 3]])
    table = tmp_path / "set" / "fixations.csv"
    assert problems == [f"{table}: 1 row(s) without a numeric x and y or an image left out "
                        "(rows 5)", f"{table}: 1 image(s) not found left out (missing.png)"]
    # the CSV itself as --root, and a table without a split column
    table.write_text("image,x,y\nb.jpg,1,1\n")
    assert [v.split for v in read_saliency_set("fixation-table", table)] == [UNSPLIT]


def test_fixation_table_without_its_columns_names_them(tmp_path):
    (tmp_path / "fixations.csv").write_text("picture,x\na.png,1\n")
    with pytest.raises(LabelFileError, match=r"fixations\.csv.*image"):
        read_saliency_set("fixation-table", tmp_path)


# ----------------------------------------------------------------------------- folds

def test_unsplit_sets_are_dealt_into_folds_and_limits_nest(tmp_path):
    cells = np.stack([observers([(1.0, 1.0)]) for _ in range(12)])
    root = sun500(tmp_path / "sun500", cells, images=12)
    held_out = [{v.video_id for v in saliency_videos("sun500", root, "val", fold)}
                for fold in range(FOLDS)]
    assert sorted(map(len, held_out)) == [2, 2, 2, 3, 3]
    assert set().union(*held_out) == {f"{n:03d}" for n in range(1, 13)}  # each image once
    assert sum(map(len, held_out)) == 12
    train = {v.video_id for v in saliency_videos("sun500", root, "train", 1)}
    assert train == set().union(*held_out) - held_out[1]
    small, larger = ([v.video_id for v in saliency_videos("sun500", root, "train", 1, limit=n)]
                     for n in (3, 6))
    assert len(small) == 3 and larger[:3] == small and set(larger) <= train
    with pytest.raises(ValueError, match="fold 5 does not exist"):
        saliency_videos("sun500", root, "val", FOLDS)


def test_sun500_real_files_if_available():
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sun500"
    if not (root / "tidy" / "fixations.mat").is_file():
        pytest.skip("../shared/data/sun500 not present")
    videos = read_saliency_set("sun500", root)
    assert len(videos) == 500 and videos[0].video_id == "001"
    assert sum(len(v.points[0]) for v in videos) == 43894  # every observer's fixations
    assert [len(saliency_videos("sun500", root, "val", fold)) for fold in range(FOLDS)] == [100] * 5


def test_fixation_table_split_values_must_be_known_and_agree(tmp_path):
    picture(tmp_path / "a.png")
    picture(tmp_path / "b.png")
    table = tmp_path / "fixations.csv"
    table.write_text("image,x,y,split\na.png,1,1,dev\n")
    with pytest.raises(LabelFileError, match=r"fixations\.csv: split values 'dev'"):
        read_saliency_set("fixation-table", tmp_path)
    table.write_text("image,x,y,split\na.png,1,1,train\na.png,2,2,test\nb.png,1,1,\n")
    with reported_problems() as problems:
        videos = read_saliency_set("fixation-table", tmp_path)
    assert [(v.video_id, v.split) for v in videos] == [("b", UNSPLIT)]  # an empty cell: folds
    assert problems == [f"{table}: 1 image(s) whose rows name different splits left out (a.png)"]


def test_sun500_cells_that_are_not_numbers_leave_their_image_out(tmp_path):
    text = np.empty(1, dtype=object)
    text[0] = np.array(["abc"])
    cells = np.stack([observers([(4.0, 2.0)]), text])
    root = sun500(tmp_path / "sun500", cells, images=2)
    with reported_problems() as problems:
        videos = read_saliency_set("sun500", root)
    assert [v.video_id for v in videos] == ["001"] and "(002.jpg)" in problems[0]


def test_an_unreadable_fixation_mat_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "fixLocs.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, cut short")
    with pytest.raises(OSError, match=f"{bad}: not a readable MATLAB file"):
        dl.load_fixations(bad, SIZE)


def test_a_set_with_its_own_split_has_no_folds(tmp_path):
    from fakes import tiny_dhf1k
    root = tiny_dhf1k(tmp_path / "DHF1K")
    assert len(saliency_videos("dhf1k", root, "val")) == 2  # fold 0: the official split
    with pytest.raises(ValueError, match="dhf1k has an official split"):
        saliency_videos("dhf1k", root, "val", 2)
