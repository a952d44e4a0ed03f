"""train_lsvq.py: splits, MOS scale in checkpoints, validation-only model choice, exact resume
through the common training loop, predictions and results files."""
import copy
import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch

import train_lsvq as tl
from dagr import evaluation, training
from dagr.checkpoints import checkpoint_network, load_checkpoint
from dagr.datasets import read_table
from dagr.evaluation import RESULT_COLUMNS, clip_loader, results_table, write_results
from dagr.splits import MIN_VAL, random_split, split_table
from dagr.training import Objective, TrainingRun, train_epoch
from dataloader import MosScale, VQAClipDataset
from fakes_vqa import stored_quality_set, train_argv, train_config
from pictures import assert_curves_of, png_image, spy_on_curves
from VQA import QualityNet


@pytest.fixture(scope="module")
def quality_set(tmp_path_factory):
    return stored_quality_set(tmp_path_factory.mktemp("set"))


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(quality_set):
    labels, frames, maps = quality_set
    config = train_config(labels, frames, maps, "unused")
    table = read_table("konvid", labels).iloc[[0, 4, 7, 11]]
    loader = clip_loader(table, frames, maps, MosScale(1.0, 5.0), config.size, 4, 0)
    torch.manual_seed(0)
    model = QualityNet(backbone="resnet18", weights=None, dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    run = TrainingRun(
        out=None, model=model, model_kwargs={}, optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), loader=loader,
        objective=Objective(tl.clip_scores, functools.partial(tl.clip_loss, config=config)),
        validate=dict, best_metric="score", logged=(), curves_title="", settings={},
        payload={}, epochs=6, device=torch.device("cpu"), precision="fp32",
        clip_grad=config.clip_grad)
    losses = [train_epoch(run, "epoch") for _ in range(6)]
    assert np.mean(losses[-2:]) < 0.5 * losses[0], losses


# ----------------------------------------------------------------------------- splits

def test_lsvq_official_split_and_seeded_random_splits():
    table = pd.DataFrame({"video_id": [f"v{i}" for i in range(100)], "path": None,
                          "mos": np.linspace(0, 100, 100),
                          "split": ["train"] * 80 + ["test"] * 15 + ["test_1080p"] * 5})
    parts = split_table(table, val_fraction=0.05, test_fraction=0.2, seed=3)
    assert list(parts) == ["train", "val", "test", "test_1080p"]
    assert len(parts["val"]) == 4 and len(parts["train"]) == 76
    assert set(parts["train"]["video_id"]) | set(parts["val"]["video_id"]) == {f"v{i}" for i in range(80)}
    assert set(parts["test"]["video_id"]) == {f"v{i}" for i in range(80, 95)}
    assert parts["val"].equals(split_table(table, 0.05, 0.2, seed=3)["val"])
    assert not parts["val"].equals(split_table(table, 0.05, 0.2, seed=4)["val"])

    table["split"] = "all"  # a set without a split of its own, such as KoNViD-1k
    parts = split_table(table, val_fraction=0.05, test_fraction=0.2, seed=0)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [76, 4, 20]
    ids = [set(parts[k]["video_id"]) for k in ("train", "val", "test")]
    assert set.union(*ids) == set(table["video_id"]) and sum(map(len, ids)) == 100
    assert len(random_split(table.iloc[:12], 0.05, 0.2, 0)["val"]) == MIN_VAL
    table["split"] = "test_1080p"  # test videos only: nothing to train on
    with pytest.raises(ValueError, match="test videos only"):
        split_table(table, 0.05, 0.2, 0)


# ----------------------------------------------------------------------------- training runs

@pytest.mark.slow
def test_training_run_files_scale_and_validation_only_choice(quality_set, tmp_path, monkeypatch):
    labels, frames, maps = quality_set
    argv = train_argv(labels, frames, maps, tmp_path / "run", "--epochs", "3")
    config = tl.parse_args(argv)
    parts = split_table(read_table("konvid", labels), config.val_fraction,
                        config.test_fraction, config.seed)
    seen = []  # which videos every predict() call scored, in order
    real_predict = evaluation.predict

    def spy(model, loader, *args, **kwargs):
        seen.append(set(loader.dataset.table["video_id"]))
        return real_predict(model, loader, *args, **kwargs)

    monkeypatch.setattr(tl, "predict", spy)  # validation
    monkeypatch.setattr(evaluation, "predict", spy)  # the tests after training
    drawn = spy_on_curves(monkeypatch)
    assert tl.main(argv) == 0

    val_ids, test_ids = set(parts["val"]["video_id"]), set(parts["test"]["video_id"])
    assert seen == [val_ids] * 3 + [test_ids]  # the test videos only after training

    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]  # numbered by finished epochs, as train_sal's
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["kind"] == "quality" and best["best_epoch"] == int(log["val_score"].idxmax()) + 1
    assert best["epoch"] == best["best_epoch"]
    assert best["metrics"]["srcc"] == pytest.approx(log["val_srcc"][best["best_epoch"] - 1],
                                                    abs=1e-5)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 3
    # weight decay on weight matrices and kernels, not on biases and norms (as train_sal's)
    groups = last["optimizer_state"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [tl.WEIGHT_DECAY, 0.0]
    # curves.png: redrawn after every epoch from the whole log, the best epoch that of best.pt
    assert [log["epoch"].tolist() for log, _ in drawn] == [[1], [1, 2], [1, 2, 3]]
    assert_curves_of(drawn[-1], log, best["best_epoch"])
    png_image(tmp_path / "run" / "curves.png")

    # MOS scale: the training split's range, stored, and used to map predictions back
    scale = MosScale(**best["mos_scale"])
    assert scale == MosScale.fit(parts["train"]["mos"])
    predictions = pd.read_csv(tmp_path / "run" / "predictions_test.csv", dtype={"video_id": str})
    assert list(predictions.columns) == ["video_id", "mos", "prediction", "mapped"]
    assert set(predictions["video_id"]) == test_ids
    model = checkpoint_network(tmp_path / "run" / "best.pt", "quality")[0]
    item = VQAClipDataset(parts["test"].iloc[:1], frames, maps, scale, config.size)[0]
    with torch.no_grad():
        unit = model(item["frames"][None], item["saliency"][None]).item()
    row = predictions.set_index("video_id").loc[item["video_id"]]
    assert row["prediction"] == pytest.approx(scale.to_mos(unit), rel=1e-4)
    assert row["mos"] == pytest.approx(item["mos"])

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["Dataset"] for r in results] == ["KoNViD-1k"] and results[0]["n"] == len(test_ids)
    assert (tmp_path / "run" / "results.md").read_text().startswith(
        "| Dataset | PLCC | SRCC | KRCC | RMSE | PLCC (logistic) | n |")


@pytest.mark.slow
def test_resume_continues_with_the_saved_state_and_matches_an_uninterrupted_run(
        quality_set, tmp_path, monkeypatch):
    labels, frames, maps = quality_set
    options = ("--epochs", "2", "--saliency-alpha", "0")
    whole = load_checkpoint(tl.train(train_config(labels, frames, None, tmp_path / "a", *options))
                            .with_name("last.pt"))

    real_epoch = training.train_epoch
    calls = []

    def crash_in_second_epoch(run, desc):
        calls.append(copy.deepcopy(run.optimizer.state_dict()))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(run, desc)

    monkeypatch.setattr(training, "train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        tl.train(train_config(labels, frames, None, tmp_path / "b", *options))
    saved = load_checkpoint(tmp_path / "b" / "last.pt")
    assert saved["epoch"] == 1

    calls.clear()

    def record(run, desc):
        calls.append(copy.deepcopy(run.optimizer.state_dict()))
        return real_epoch(run, desc)

    monkeypatch.setattr(training, "train_epoch", record)
    drawn = spy_on_curves(monkeypatch)
    tl.train(train_config(labels, frames, None, tmp_path / "b", *options, "--resume"))
    assert len(calls) == 1  # only the second epoch ran
    resumed = calls[0]
    assert resumed["state"].keys() == saved["optimizer_state"]["state"].keys()
    for key, state in saved["optimizer_state"]["state"].items():
        assert torch.equal(resumed["state"][key]["exp_avg"], state["exp_avg"])
        assert resumed["state"][key]["step"] == state["step"]

    final = load_checkpoint(tmp_path / "b" / "last.pt")
    assert final["epoch"] == 2
    for name, tensor in whole["model_state"].items():
        assert torch.equal(final["model_state"][name], tensor), name
    log = pd.read_csv(tmp_path / "b" / "log.csv")
    assert log["epoch"].tolist() == [1, 2]
    assert len(drawn) == 1  # the resumed epoch redraws the curves of the whole log
    assert_curves_of(drawn[0], log, final["best_epoch"])
    png_image(tmp_path / "b" / "curves.png")


def test_missing_saliency_maps_or_labels_fail_clearly(quality_set, tmp_path, capsys):
    labels, frames, _ = quality_set
    argv = ["--dataset", "konvid", "--labels", str(labels), "--frames", str(frames),
            "--saliency", str(tmp_path / "nomaps"), "--out", str(tmp_path / "run"),
            "--backbone", "resnet18", "--no-pretrained", "--device", "cpu", "--workers", "0"]
    assert tl.main(argv) == 2
    assert "saliency maps missing" in capsys.readouterr().err
    argv[argv.index("--labels") + 1] = str(tmp_path / "none.csv")
    assert tl.main(argv) == 2
    assert "none.csv" in capsys.readouterr().err


def test_results_table_average_and_undefined_values(tmp_path):
    metrics = {"A": {"plcc": 0.8, "srcc": 0.7, "krcc": 0.5, "rmse": 1.0, "plcc_logistic": 0.85, "n": 10},
               "B": {"plcc": float("nan"), "srcc": float("nan"), "krcc": float("nan"),
                     "rmse": 0.4, "plcc_logistic": float("nan"), "n": 4}}
    table = results_table(metrics)
    assert table["Dataset"].tolist() == ["A", "B", "Average"]
    assert np.isnan(table.loc[2, "PLCC"])  # an undefined set makes the average undefined
    table = results_table({"A": metrics["A"], "C": {**metrics["A"], "plcc": 0.6}})
    assert table.loc[2, "PLCC"] == pytest.approx(0.7) and table.loc[2, "n"] == 20
    write_results(results_table(metrics), tmp_path)
    assert "| B | n/a | n/a | n/a | 0.400 | n/a | 4 |" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())[1]["PLCC"] is None
    assert pd.read_csv(tmp_path / "results.csv").columns.tolist() == RESULT_COLUMNS


def test_synthetic_quality_set_layout_and_mos_formula(tmp_path):
    from dagr import demo_data as dq

    labels = dq.write_quality_set(tmp_path / "a", n_videos=4, frames=4, size=(16, 28), seed=1, kinds=dq.KINDS)
    assert labels == tmp_path / "a" / "KoNViD_1k_mos.csv"
    table = read_table("konvid", labels, tmp_path / "a" / "KoNViD_1k_videos")
    assert len(table) == 4 and table["path"].notna().all()
    details = pd.read_csv(tmp_path / "a" / "KoNViD_1k_distortions.csv")
    assert details["kind"].tolist() == ["blur", "noise", "blocking", "freeze"]
    weight = details["region"].map(dq.REGION_WEIGHT)
    assert np.allclose(details["mos"], 5 - 4 * details["strength"] * weight, atol=1e-3)
    assert np.allclose(table["mos"], details["mos"])
    again = dq.write_quality_set(tmp_path / "b", n_videos=4, frames=4, size=(16, 28), seed=1, kinds=dq.KINDS)
    assert pd.read_csv(again).equals(pd.read_csv(labels))
