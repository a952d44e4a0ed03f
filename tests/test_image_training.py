"""train_sal.py on an eye-tracking set of still images: training and validation (s-AUC from
other images), the image defaults, pretraining on images before video, and the ablation's
reference rows and learning curve."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import train_sal
from dagr.checkpoints import checkpoint_network, load_checkpoint
from dagr.datasets import saliency_videos
from dagr.evaluation import evaluation_clips, validate
from dagr.images import write_png
from fakes import TINY_SIZE, tiny_config, tiny_dhf1k
from metrics import SALIENCY_METRICS, names
from pictures import png_image

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGES = 10  # 2 validation images in each of the 5 folds


def gaze_table(root: Path, images: int = IMAGES) -> Path:
    """A fixation table over `images` photos, 96x64 pixels, each with a bright disk that
    three observers looked at, at a place that differs from photo to photo."""
    rng = np.random.default_rng(0)
    rows = []
    root.mkdir(parents=True)
    for i in range(images):
        x, y = rng.uniform(15, 80), rng.uniform(12, 50)
        frame = np.full((64, 96, 3), 60, np.uint8)
        cols, lines = np.meshgrid(np.arange(96), np.arange(64))
        frame[(cols - x) ** 2 + (lines - y) ** 2 < 36] = 240
        write_png(root / f"photo_{i}.png", frame)
        rows += [f"photo_{i}.png,{x + dx:.1f},{y + dy:.1f},{observer}"
                 for observer, (dx, dy) in enumerate(((0, 0), (2, -1), (-1, 2)))]
    (root / "fixations.csv").write_text("image,x,y,observer\n" + "\n".join(rows) + "\n")
    return root


def image_config(root: Path, out: Path, *options: str):
    return train_sal.parse_args([
        "--dataset", "fixation-table", "--root", str(root), "--out", str(out),
        "--saliency-width", "4", "--size", *map(str, TINY_SIZE), "--epochs", "2",
        "--batch-size", "2", "--lr", "3e-3", "--warmup", "0.5", "--registers", "2",
        "--workers", "0", "--device", "cpu", *options])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, one_thread):  # noqa: F811 (fixture argument)
    base = tmp_path_factory.mktemp("images")
    root = gaze_table(base / "photos")
    config = image_config(root, base / "run", "--flip", "--fold", "3")
    return root, Path(train_sal.train(config)), config


def test_an_image_set_trains_on_one_frame_clips_and_scores_s_auc_against_other_images(image_run):
    _, best, config = image_run
    assert (config.clip_len, config.clips_per_video, config.val_clips) == (1, 1, 1)
    payload = load_checkpoint(best)
    assert payload["settings"]["fold"] == 3 and payload["trained_on"]["videos"] == IMAGES - 2
    log = pd.read_csv(best.parent / "log.csv")
    assert len(log) == 2
    for metric in names(SALIENCY_METRICS):  # s-AUC too: a video of one frame has no other
        assert np.isfinite(log[f"val_{metric}"]).all(), metric
    png_image(best.parent / "curves.png")


def test_evaluate_scores_the_fold_the_run_validated_on(image_run, capsys):
    root, best, _ = image_run
    assert train_sal.main(["--evaluate", str(best), "--dataset", "fixation-table",
                           "--root", str(root), "--workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    cc = load_checkpoint(best)["metrics"]["cc"]
    assert f"{cc:.4f}" in printed


def test_video_training_starts_from_an_image_trained_network(image_run, tmp_path):
    _, best, _ = image_run
    pretrained, payload = checkpoint_network(best, "saliency")
    config = tiny_config(tiny_dhf1k(tmp_path / "DHF1K"), tmp_path / "video", "--init", str(best),
                         "--registers", "0", "--epochs", "1")
    network, kwargs = train_sal.start_network(config)
    assert kwargs == payload["model_kwargs"] and kwargs["registers"] == 2  # --init's, not 0
    for name, weight in pretrained.state_dict().items():
        assert torch.equal(network.state_dict()[name], weight), name
    video_best = train_sal.train(config)
    tuned, tuned_payload = checkpoint_network(video_best, "saliency")  # loads as any checkpoint
    assert tuned_payload["model_kwargs"] == payload["model_kwargs"]
    assert tuned_payload["trained_on"]["dataset"] == "dhf1k"
    assert math.isfinite(tuned_payload["metrics"]["cc"])
    assert any(not torch.equal(weight, tuned.state_dict()[name])  # and it trained on from there
               for name, weight in pretrained.state_dict().items())


def test_init_with_something_that_is_not_a_saliency_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    root = tiny_dhf1k(tmp_path / "DHF1K")
    assert train_sal.main(["--root", str(root), "--out", str(tmp_path / "run"), "--init", str(bad),
                           "--saliency-width", "4", "--workers", "0", "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith(f"error: {bad}") and "Traceback" not in "".join(error)


@pytest.mark.slow
def test_the_ablation_puts_the_references_beside_the_networks_and_draws_a_learning_curve(
        tmp_path):
    root = gaze_table(tmp_path / "photos")
    argv = ["--dataset", "fixation-table", "--root", str(root), "--out", str(tmp_path / "ab"),
            "--saliency-width", "2", "--size", *map(str, TINY_SIZE), "--epochs", "1",
            "--batch-size", "2", "--workers", "0", "--device", "cpu", "--ablation", "baseline",
            "--seeds", "0", "1", "--learning-curve", "4"]
    assert train_sal.main(argv) == 0
    runs = pd.read_csv(tmp_path / "ab" / "ablation.csv")
    assert runs["variant"].tolist() == ["centre prior", "spectral residual", "baseline", "baseline"]
    references = runs.iloc[:2]
    assert np.isfinite(references[names(SALIENCY_METRICS)]).all().all()
    assert references["training"].tolist() == [8, 8] and references["seed"].isna().all()
    assert np.isfinite(runs.loc[2:, "cc_last"]).all()  # the networks' trend beside their best
    markdown = (tmp_path / "ab" / "ablation.md").read_text()
    assert "| centre prior | 1 |" in markdown and "CC, last 3 epochs" in markdown
    curve = pd.read_csv(tmp_path / "ab" / "learning_curve.csv")
    assert sorted(curve["training"].tolist()) == [4, 4, 8, 8]
    assert (tmp_path / "ab" / "train_4" / "baseline" / "seed_1" / "best.pt").is_file()
    assert not (tmp_path / "ab" / "train_8").exists()  # all 8: the ablation's own runs
    text = (tmp_path / "ab" / "learning_curve.md").read_text()
    assert "| baseline | 4 | 2 |" in text and "| centre prior | 8 | 1 |" in text
    png_image(tmp_path / "ab" / "learning_curve.png")
    png_image(tmp_path / "ab" / "predictions.png")


@pytest.mark.slow
def test_cross_validation_trains_every_fold_and_pools_them(tmp_path):
    root = gaze_table(tmp_path / "photos")
    argv = ["--dataset", "fixation-table", "--root", str(root), "--out", str(tmp_path / "cv"),
            "--saliency-width", "2", "--size", *map(str, TINY_SIZE), "--epochs", "1",
            "--batch-size", "2", "--workers", "0", "--device", "cpu", "--ablation", "baseline",
            "--seeds", "0", "--cross-validate"]
    assert train_sal.main(argv) == 0
    runs = pd.read_csv(tmp_path / "cv" / "ablation.csv")
    assert sorted(runs["fold"].unique()) == [0, 1, 2, 3, 4]
    assert runs.groupby("variant").size().to_dict() == {
        "baseline": 5, "centre prior": 5, "spectral residual": 5}
    for fold in range(5):
        settings = load_checkpoint(tmp_path / "cv" / f"fold_{fold}" / "baseline" / "seed_0"
                                   / "best.pt")["settings"]
        assert settings["fold"] == fold
    markdown = (tmp_path / "cv" / "ablation.md").read_text()
    assert "| Saliency network | Folds × seeds |" in markdown and "| baseline | 5 × 1 |" in markdown
    prior, baseline = (runs.loc[runs["variant"] == name, "cc"].mean()
                       for name in ("centre prior", "baseline"))
    assert f"| {baseline - prior:+.3f} |" in markdown  # the column CC - centre prior


def test_an_unreadable_set_stops_in_one_line_and_leaves_no_run_folder(tmp_path, capsys):
    (tmp_path / "sun500" / "tidy").mkdir(parents=True)
    (tmp_path / "sun500" / "tidy" / "fixations.mat").write_bytes(b"MATLAB 5.0 truncated")
    out = tmp_path / "run"
    assert train_sal.main(["--dataset", "sun500", "--root", str(tmp_path / "sun500"),
                           "--out", str(out), "--workers", "0", "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        f"error: {tmp_path / 'sun500' / 'tidy' / 'fixations.mat'}: not a readable MATLAB file")
    assert not out.exists()


@pytest.mark.parametrize("options, refused", [
    (["--cross-validate"], "--cross-validate goes with --ablation"),
    (["--learning-curve", "100"], "--learning-curve goes with --ablation"),
    (["--ablation", "baseline", "--init", "best.pt"], "leave out --init and --train-limit"),
    (["--ablation", "baseline", "--learning-curve", "0"], "give 1 or more"),
    (["--train-limit", "-3"], "give 1 or more"),
])
def test_options_that_would_be_ignored_are_refused_in_one_line(options, refused, capsys):
    with pytest.raises(SystemExit) as stop:
        train_sal.parse_args(["--dataset", "sun500", *options])
    assert stop.value.code == 2 and refused in capsys.readouterr().err


def test_cross_validation_of_a_set_with_its_own_split_stops_before_training(tmp_path, capsys):
    root = tiny_dhf1k(tmp_path / "DHF1K")
    assert train_sal.main(["--root", str(root), "--out", str(tmp_path / "cv"), "--ablation",
                           "baseline", "--cross-validate", "--workers", "0",
                           "--device", "cpu"]) == 2
    assert "dhf1k has an official split" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()


def test_image_validation_scores_each_image_once_whatever_its_clips(image_run):
    root, best, _ = image_run
    model = checkpoint_network(best, "saliency")[0]
    videos = saliency_videos("fixation-table", root, "val", 3)
    once, twice = (validate(model, evaluation_clips(videos, 1, TINY_SIZE, clips),
                            torch.device("cpu"), progress=False) for clips in (1, 2))
    # the same images, scored once each (batches of other sizes round differently)
    assert once.keys() == twice.keys()
    assert all(once[name] == pytest.approx(twice[name], rel=1e-5) for name in once)
