"""train_sal.py (training, exact resume, evaluation) and the demo_data generator it trains on,
with a width-4 network on 32x48 synthetic DHF1K videos."""
from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
import torch

from dagr import demo_data
from dagr import figures
import train_sal
from dagr.datasets import read_saliency_set
from metrics import SALIENCY_METRICS, names
from fakes import tiny_config, tiny_dhf1k
from pictures import assert_curves_of, png_image, spy_on_curves
from dagr.checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):  # noqa: F811 (fixture argument)
    """A 2-epoch run: (data root, output folder, its config)."""
    base = tmp_path_factory.mktemp("train_sal")
    root = tiny_dhf1k(base / "DHF1K")
    config = tiny_config(root, base / "run")
    assert train_sal.train(config) == base / "run" / "best.pt"
    return root, base / "run", config


def read_log(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_best_and_last_checkpoints_and_a_log(trained) -> None:
    _, out, config = trained
    rows = read_log(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "lr",
                             *(f"val_{m}" for m in names(SALIENCY_METRICS)), "seconds", "best"]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("train_loss", "val_cc", "val_auc_j"))
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last["kind"] == best["kind"] == "saliency" and last["epoch"] == 2
    assert last["model_kwargs"] == {"channels": 4, "registers": 2, "register_mode": "attention",
                                    "read_levels": ["rgb", "bottleneck"], "register_write": "mix",
                                    "write_levels": ["dec3", "dec2", "dec1", "dec0"]}
    assert last["settings"]["size"] == [32, 48] and last["settings"]["clip_len"] == 6
    groups = last["optimizer_state"]["param_groups"]  # decay on weights, not biases and norms
    assert [g["weight_decay"] for g in groups] == [train_sal.WEIGHT_DECAY, 0.0]
    best_row = max(rows, key=lambda r: float(r["val_cc"]))
    assert best["epoch"] == int(best_row["epoch"])
    assert best["metrics"]["cc"] == pytest.approx(float(best_row["val_cc"]), rel=1e-5)
    # `best` marks the improving epochs; curves.png marks the last of them, best.pt's epoch
    cc = [float(r["val_cc"]) for r in rows]
    assert [r["best"] for r in rows] == ["1"] + ["1" if cc[1] > cc[0] else "0"]
    assert figures.best_epoch(pd.read_csv(out / "log.csv")) == best["epoch"]
    png_image(out / "curves.png")


class Interrupted(Exception):
    pass


def test_resume_after_an_interruption_equals_an_uninterrupted_run(trained, tmp_path, monkeypatch) -> None:
    root, full, _ = trained
    validate, calls = train_sal.validate, []

    def dies_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return validate(*args, **kwargs)

    monkeypatch.setattr(train_sal, "validate", dies_in_epoch_two)
    drawn = spy_on_curves(monkeypatch)
    with pytest.raises(Interrupted):
        train_sal.train(tiny_config(root, tmp_path))
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_sal, "validate", validate)
    train_sal.train(tiny_config(root, tmp_path, "--resume"))
    # drawn after epoch 1, then by the resumed run from the whole log
    assert [log["epoch"].tolist() for log, _ in drawn] == [[1], [1, 2]]
    log = pd.read_csv(tmp_path / "log.csv")
    assert_curves_of(drawn[-1], log, load_checkpoint(tmp_path / "best.pt")["epoch"])

    resumed, reference = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(full / "last.pt")
    assert resumed["model_state"].keys() == reference["model_state"].keys()
    for name, tensor in reference["model_state"].items():
        assert torch.equal(resumed["model_state"][name], tensor), name
    assert resumed["metrics"] == reference["metrics"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_log(tmp_path / "log.csv")) == strip(read_log(full / "log.csv"))


def test_evaluate_reproduces_the_validation_of_training(trained, capsys) -> None:
    root, out, _ = trained
    best = load_checkpoint(out / "best.pt")
    metrics = train_sal.evaluate(out / "best.pt", "dhf1k", root, "val", device="cpu", progress=False)
    assert metrics == pytest.approx(best["metrics"], rel=1e-6)
    assert train_sal.main(["--evaluate", str(out / "best.pt"), "--root", str(root), "--split", "val",
                           "--batch-size", "2", "--workers", "0", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "| cc | nss | sim | kld | auc_j | s_auc |" in table
    assert f"{best['metrics']['cc']:.4f}" in table and f"{best['metrics']['s_auc']:.4f}" in table
    train_scores = train_sal.evaluate(out / "best.pt", "dhf1k", root, "train", device="cpu", progress=False)
    assert train_scores != metrics  # other videos, other numbers


def test_wrong_checkpoint_kind_and_empty_split_are_refused(trained, tmp_path, capsys) -> None:
    root, out, _ = trained
    quality = load_checkpoint(out / "best.pt") | {"kind": "quality"}
    save_checkpoint(tmp_path / "quality.pt", quality)
    with pytest.raises(ValueError, match="not a saliency checkpoint"):
        train_sal.evaluate(tmp_path / "quality.pt", "dhf1k", root, device="cpu")
    assert train_sal.main(["--evaluate", str(tmp_path / "quality.pt"), "--root", str(root),
                           "--device", "cpu"]) == 2
    assert "not a saliency checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no annotated dhf1k videos in split 'test'"):
        train_sal.evaluate(out / "best.pt", "dhf1k", root, "test", device="cpu")


# ----------------------------------------------------------------------------- demo data

def test_demo_set_uses_the_official_layout_and_split(trained) -> None:
    root, _, _ = trained
    videos = {v.video_id: v for v in read_saliency_set("dhf1k", root)}
    assert sorted(videos) == ["0598", "0599", "0600", "0601", "0602"]
    assert [videos[k].split for k in sorted(videos)] == ["train"] * 3 + ["val"] * 2
    assert (root / "video" / "598.AVI").is_file() and len(videos["0601"]) == 10


def test_demo_scene_only_the_salient_object_moves_and_gaze_follows_it() -> None:
    scene = demo_data.moving_object_scene(12, (40, 64), np.random.default_rng(5))
    radius = max(40 // 10, 3)
    rows, cols = np.mgrid[:40, :64]

    def near(centre, reach):
        return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= reach ** 2

    assert np.linalg.norm(scene.centres[-1] - scene.centres[0]) > 5  # it does move
    for t in range(1, 12):
        changed = (scene.frames[t] != scene.frames[0]).any(axis=-1)
        assert changed.any()
        assert not (changed & ~(near(scene.centres[0], radius + 1) | near(scene.centres[t], radius + 1))).any()
        peak = np.unravel_index(scene.maps[t].argmax(), scene.maps[t].shape)
        assert np.abs(np.array(peak) - scene.centres[t]).max() <= 1
        fixated = scene.fixations[t] > 0
        assert fixated.sum() >= 3 and scene.maps[t][fixated].mean() > 0.3 * 255
