"""demo.py end to end at its smallest size: the tables, figures and data it writes."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest

import demo
from dagr import demo_data
from dagr.datasets import read_saliency_set, read_table

from pictures import png_image
from dagr.provenance import TRAINED_ON
from dagr.checkpoints import RESUME_STATE, load_checkpoint
from dagr.evaluation import RESULT_COLUMNS
from dagr.splits import split_table

METRICS = ["PLCC", "SRCC", "KRCC", "RMSE"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):  # noqa: F811
    out = tmp_path_factory.mktemp("demo")
    code = demo.main(["--size", "tiny", "--out", str(out), "--device", "cpu", "--workers", "1"])
    return code, out


def finite_or_undefined(value) -> bool:
    return value is None or math.isfinite(value)


@pytest.mark.slow
def test_the_demo_runs_and_writes_the_results_table(tiny_run, capsys):
    code, out = tiny_run
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1 and list(rows[0]) == RESULT_COLUMNS
    tested = pd.read_csv(out / "eval" / "KoNViD_1k_mos_test.csv")
    assert rows[0]["n"] == len(tested) > 0
    assert all(finite_or_undefined(rows[0][m]) for m in METRICS)
    assert rows[0]["RMSE"] is not None and rows[0]["RMSE"] >= 0
    assert (out / "results.md").read_text().startswith("| Dataset | PLCC | SRCC | KRCC | RMSE |")
    # the demo model's test predictions are those of evaluate_vqa on the held-out clips only
    predictions = pd.read_csv(out / "eval" / demo.DEMO_MODEL / "predictions_KoNViD-1k.csv")
    assert sorted(predictions["video_id"]) == sorted(tested["flickr_id"])
    trained_on = pd.read_csv(out / "quality" / demo.DEMO_MODEL / "predictions_test.csv")
    assert sorted(trained_on["video_id"]) == sorted(tested["flickr_id"])


@pytest.mark.slow
def test_the_ablation_table_compares_saliency_and_registers(tiny_run):
    _, out = tiny_run
    table = pd.read_csv(out / "ablation.csv")
    assert table["Quality model"].tolist() == [n.replace("_", " ") for n in demo.QUALITY_RUNS]
    assert table["a"].tolist() == [0.5, 0.5, 0.0]
    assert table["Saliency network"].str.contains("registers").tolist() == [True, True, False]
    assert table["Saliency CC"].iloc[:2].notna().all() and np.isnan(table["Saliency CC"].iloc[2])
    for column in METRICS:
        assert all(finite_or_undefined(v) for v in table[column].replace({np.nan: None}))
    markdown = (out / "ablation.md").read_text().splitlines()
    assert len(markdown) == 2 + len(demo.QUALITY_RUNS)


@pytest.mark.slow
def test_the_figures_are_images(tiny_run):
    _, out = tiny_run
    for name in ("overlays.png", "scatter.png", "training_curves.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and min(image.shape[:2]) > 200, name
        assert image.std() > 10, name  # not a blank canvas
    # every training's curves and every evaluation's scatter, beside their numbers
    layout = demo.Layout(out, demo.SEED)
    for name in demo.SALIENCY_RUNS:
        png_image(layout.saliency_run(name) / "curves.png")
    for name in demo.QUALITY_RUNS:
        png_image(out / "quality" / name / "curves.png")
        png_image(out / "eval" / name / "scatter_KoNViD-1k.png")


@pytest.mark.slow
def test_every_clip_gets_maps_named_like_its_frames_and_no_bulk_overlays(tiny_run):
    _, out = tiny_run
    videos = sorted(p.name for p in (out / "frames").iterdir() if p.is_dir())
    assert len(videos) == demo.SIZES["tiny"].quality_clips
    frames = sorted(p.name for p in (out / "frames" / videos[0]).glob("*.png"))
    for name in ("registers", "baseline"):
        assert sorted(p.name for p in (out / "maps" / name).iterdir()) == videos
        assert sorted(p.name for p in (out / "maps" / name / videos[0]).glob("*.png")) == frames
        assert not (out / "maps" / f"{name}_overlays").exists()  # overlays.png draws its own


@pytest.mark.slow
def test_the_demo_keeps_no_optimizer_state_and_knows_its_data_is_synthetic(tiny_run):
    _, out = tiny_run
    for name in demo.QUALITY_RUNS:  # only the demo model's checkpoint is kept
        kept = sorted(p.name for p in (out / "quality" / name).glob("*.pt"))
        assert kept == (["best.pt"] if name == demo.DEMO_MODEL else []), name
    layout = demo.Layout(out, demo.SEED)
    for run in [layout.saliency_run(name) for name in demo.SALIENCY_RUNS]:
        assert load_checkpoint(run / "best.pt")[TRAINED_ON]["synthetic"] is True, run
    run = out / "quality" / demo.DEMO_MODEL
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt"], run
    payload = load_checkpoint(run / "best.pt")
    assert not set(RESUME_STATE) & set(payload), run
    assert payload[TRAINED_ON]["synthetic"] is True, run
    quality = load_checkpoint(out / "quality" / demo.DEMO_MODEL / "best.pt")[TRAINED_ON]
    labels = read_table("konvid", out / "data" / "KoNViD-1k" / "KoNViD_1k_mos.csv")
    size = demo.SIZES["tiny"]
    split = split_table(labels, size.val_fraction, size.test_fraction, demo.SEED)
    assert quality["dataset"] == "konvid" and quality["videos"] == len(split["train"])


@pytest.mark.slow
def test_the_demo_data_are_in_the_official_layouts(tiny_run):
    _, out = tiny_run
    size = demo.SIZES["tiny"]
    videos = read_saliency_set("dhf1k", out / "data" / "GlobalContext")
    assert [v.split for v in videos] == ["train"] * size.check_train + ["val"] * size.check_val
    quality = out / "data" / "KoNViD-1k"
    table = read_table("konvid", quality / "KoNViD_1k_mos.csv", quality / "KoNViD_1k_videos")
    assert len(table) == size.quality_clips and table["path"].notna().all()
    details = pd.read_csv(quality / "KoNViD_1k_distortions.csv")
    assert set(details["kind"]) <= set(demo_data.DECOY_KINDS)
    # a defect on the whole frame, on the salient disk or on its decoy
    assert set(details["region"]) == set(demo_data.DECOY_TURNS)


def test_a_foreign_folder_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert demo.main(["--size", "tiny", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_options_change_the_presets_counts():
    args = demo.parse_args(["--size", "tiny", "--quality-clips", "40", "--check-epochs", "3"])
    size, preset = demo.asdict(demo.chosen_size(args)), demo.asdict(demo.SIZES["tiny"])
    assert size.pop("quality_clips") == 40 and size.pop("check_epochs") == 3
    assert size == {k: v for k, v in preset.items() if k not in ("quality_clips", "check_epochs")}
    assert demo.chosen_size(demo.parse_args([])) == demo.SIZES[demo.SIZE]


def test_the_check_variant_sets_the_strips_of_both_sets(capsys):
    args = demo.parse_args(["--check-variant", "continuous"])
    assert demo.chosen_size(args).check_size == (24, 640)
    with pytest.raises(SystemExit) as stop:
        demo.parse_args(["--check-variant", "rainbow"])
    assert stop.value.code == 2 and "--check-variant" in capsys.readouterr().err
