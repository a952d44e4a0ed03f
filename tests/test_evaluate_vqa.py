"""evaluate_vqa.py: labelled-set evaluation, constant predictions, scoring of video files with
in-process saliency, and the repeated-split fine-tuning protocol."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from dagr import demo_data as dq
import evaluate_vqa as ev
from dagr import finetune, labelled_sets
from dagr import figures
import train_lsvq as tl
from dataloader import MosScale
from dagr.datasets import read_table
from dagr.video_io import sample_video
from fakes_vqa import SIZE, TINY, lsvq_labels, saliency_checkpoint, stored_quality_set, train_config
from pictures import png_image
from dagr.checkpoints import checkpoint_network, load_checkpoint, save_checkpoint
from dagr.inference import predict_maps
from dagr.scoring import load_scorer
from dagr.splits import random_split


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny stored set and a quality checkpoint (saliency on) trained on it for one epoch."""
    root = tmp_path_factory.mktemp("eval")
    labels, frames, maps = stored_quality_set(root)
    best = tl.train(train_config(labels, frames, maps, root / "run", "--epochs", "1"))
    return labels, frames, maps, best


@pytest.mark.slow
def test_quality_payload_of_another_kind_is_refused(trained, tmp_path):
    save_checkpoint(tmp_path / "other.pt", {**load_checkpoint(trained[3]), "kind": "saliency"})
    with pytest.raises(ValueError, match="other.pt: this is a 'saliency' checkpoint, not a quality"):
        checkpoint_network(tmp_path / "other.pt", "quality")


def spy_on(monkeypatch, name: str) -> list[tuple[tuple, object]]:
    """Every (arguments, result) of the figures function `name` from now on."""
    calls, real = [], getattr(figures, name)

    def spy(*args, **kwargs):
        calls.append((args, real(*args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(figures, name, spy)
    return calls


@pytest.mark.slow
def test_evaluation_writes_predictions_and_the_papers_table(trained, tmp_path, capsys, monkeypatch):
    labels, frames, maps, best = trained
    scatters = spy_on(monkeypatch, "draw_scatter")
    lsvq = lsvq_labels(tmp_path / "labels_train_test.csv", labels, ["1000", "1003", "1006", "1009"])
    code = ev.main(["--checkpoint", str(best), "--out", str(tmp_path / "eval"), "--device", "cpu",
                    "--workers", "0", "--dataset", "konvid", "--labels", str(labels),
                    "--frames", str(frames), "--saliency", str(maps), "--dataset", "lsvq",
                    "--labels", str(lsvq), "--frames", str(frames), "--saliency", str(maps)])
    assert code == 0
    assert "| KoNViD-1k |" in capsys.readouterr().out

    konvid = pd.read_csv(tmp_path / "eval" / "predictions_KoNViD-1k.csv", dtype={"video_id": str})
    test = pd.read_csv(tmp_path / "eval" / "predictions_LSVQ.csv", dtype={"video_id": str})
    assert list(konvid.columns) == ["video_id", "mos", "prediction", "mapped"]
    assert len(konvid) == 12 and test["video_id"].tolist() == ["1000", "1003", "1006", "1009"]
    # the same frames and model give the same prediction, in the checkpoint's MOS units
    same = konvid.set_index("video_id").loc[test["video_id"]]
    assert np.allclose(same["prediction"], test["prediction"], rtol=1e-5)
    assert np.allclose(same["mos"] * 20, test["mos"])

    table = pd.read_csv(tmp_path / "eval" / "results.csv")
    assert table["Dataset"].tolist() == ["KoNViD-1k", "LSVQ", "Average"]
    row = table.iloc[0]
    assert row["n"] == 12
    assert row["SRCC"] == pytest.approx(scipy.stats.spearmanr(konvid["prediction"], konvid["mos"])[0])
    mapped_plcc = np.corrcoef(konvid["mapped"], konvid["mos"])[0, 1]
    assert row["PLCC (logistic)"] == pytest.approx(mapped_plcc, abs=1e-4)
    assert row["RMSE"] == pytest.approx(np.sqrt(np.mean((konvid["mapped"] - konvid["mos"]) ** 2)), rel=1e-3)
    assert table.loc[2, "SRCC"] == pytest.approx(table.loc[:1, "SRCC"].mean())
    assert (tmp_path / "eval" / "results.md").read_text().startswith("| Dataset | PLCC | SRCC |")

    # one scatter per set, of its predictions, titled with the table's PLCC and SRCC
    assert [args[3] for args, _ in scatters] == ["KoNViD-1k", "LSVQ"]
    for (args, drawn), predictions, row in zip(scatters, (konvid, test), table.itertuples()):
        np.testing.assert_allclose(args[1], predictions["prediction"], rtol=1e-5)
        np.testing.assert_allclose(args[2], predictions["mos"], rtol=1e-5)  # the CSV: 6 digits
        assert drawn["plcc"] == pytest.approx(row.PLCC, abs=1e-5)
        assert drawn["srcc"] == pytest.approx(row.SRCC, abs=1e-5)
        assert f"SRCC {row.SRCC:.3f}" in args[0].get_title()
        png_image(tmp_path / "eval" / f"scatter_{row.Dataset}.png")


@pytest.mark.slow
def test_constant_predictions_are_reported_undefined(trained, tmp_path):
    labels, frames, maps, best = trained
    payload = load_checkpoint(best)
    model = checkpoint_network(best, "quality")[0]
    with torch.no_grad():
        model.head[-1].weight.zero_()  # the output is the bias alone
    save_checkpoint(tmp_path / "constant.pt", {**payload, "model_state": model.state_dict()})
    with pytest.warns(RuntimeWarning, match="constant"):
        table = labelled_sets.evaluate_sets(tmp_path / "constant.pt",
                                 [ev.LabelledSet("konvid", labels, frames, maps)],
                                 tmp_path / "eval", workers=0, device="cpu")
    assert np.isnan(table.loc[0, ["PLCC", "SRCC", "KRCC", "PLCC (logistic)"]].astype(float)).all()
    predictions = pd.read_csv(tmp_path / "eval" / "predictions_KoNViD-1k.csv")
    assert predictions["prediction"].nunique() == 1
    assert "| KoNViD-1k | n/a | n/a | n/a |" in (tmp_path / "eval" / "results.md").read_text()
    assert json.loads((tmp_path / "eval" / "results.json").read_text())[0]["SRCC"] is None


@pytest.mark.slow
def test_scoring_videos_with_in_process_saliency_lists_broken_files(trained, tmp_path, capsys):
    best = trained[3]
    sal = saliency_checkpoint(tmp_path / "sal.pt")
    rng = np.random.default_rng(1)
    folder = tmp_path / "videos"
    for name, strength in (("clean", 0.0), ("noisy", 0.9)):
        scene = dq.moving_object_scene(12, SIZE, rng)
        dq.write_mp4(folder / f"{name}.mp4", dq.distorted_clip(scene, "noise", "whole", strength, rng))
    (folder / "broken.mp4").write_text("not a video")
    out = tmp_path / "scores.csv"
    code = ev.main(["--checkpoint", str(best), "--saliency-checkpoint", str(sal), "--videos",
                    str(folder), "--out", str(out), "--device", "cpu", "--workers", "1",
                    "--batch-size", "2"])
    assert code == 1
    assert "broken.mp4" in capsys.readouterr().err
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["video", "score"]
    assert sorted(scores["video"]) == [str(folder / "clean.mp4"), str(folder / "noisy.mp4")]
    failures = pd.read_csv(tmp_path / "scores_failures.csv")
    assert failures["video"].tolist() == [str(folder / "broken.mp4")]

    # the same score by hand: sampled frames, their saliency maps (8-bit), the quality model
    model = checkpoint_network(best, "quality")[0]
    scale = MosScale(**load_checkpoint(best)["mos_scale"])
    saliency_model = checkpoint_network(sal, "saliency")[0]
    frames = torch.from_numpy(sample_video(folder / "noisy.mp4", 8, SIZE).frames)  # (T, H, W, 3)
    clip = frames.permute(0, 3, 1, 2)[None] / 255
    maps = predict_maps(saliency_model, clip, "cpu")[:, :, None].float() / 255
    with torch.no_grad():
        expected = scale.to_mos(model(clip, maps).item())
    score = scores.set_index("video").loc[str(folder / "noisy.mp4"), "score"]
    assert score == pytest.approx(expected, rel=1e-4)

    (folder / "broken.mp4").unlink()
    again = ["--checkpoint", str(best), "--saliency-checkpoint", str(sal), "--videos",
             str(folder), "--out", str(out), "--device", "cpu", "--workers", "0"]
    capsys.readouterr()
    assert ev.main(again) == 2  # an earlier run's scores are never overwritten
    assert f"error: {out}: already exists" in capsys.readouterr().err
    out.unlink()
    assert ev.main(again) == 0
    assert not (tmp_path / "scores_failures.csv").exists()
    assert np.allclose(pd.read_csv(out)["score"], scores["score"], rtol=1e-5)


@pytest.mark.slow
def test_scoring_without_saliency_checkpoint_needs_saliency_off(trained, tmp_path):
    labels, frames, _, best = trained
    dq.write_mp4(tmp_path / "v" / "a.mp4", np.zeros((4, *SIZE, 3), np.uint8))
    with pytest.raises(ValueError, match="--saliency-checkpoint"):
        load_scorer(best, None, torch.device("cpu"))
    payload = load_checkpoint(best)
    save_checkpoint(tmp_path / "off.pt", {**payload, "model_kwargs": {**payload["model_kwargs"],
                                                                      "saliency_alpha": 0.0}})
    assert ev.main(["--checkpoint", str(tmp_path / "off.pt"), "--videos", str(tmp_path / "v"),
                    "--out", str(tmp_path / "s.csv"), "--workers", "0", "--device", "cpu"]) == 0
    scores = pd.read_csv(tmp_path / "s.csv")
    assert len(scores) == 1 and np.isfinite(scores["score"]).all()


@pytest.mark.slow
def test_finetuning_protocol_writes_median_and_std(trained, tmp_path, monkeypatch):
    labels, frames, maps, best = trained
    drawn = spy_on(monkeypatch, "draw_split_metrics")
    item = ev.LabelledSet("konvid", labels, frames, maps)
    table = ev.finetune_splits(best, item, tmp_path / "ft", splits=2, seed=5,
                               train_options=[*TINY, "--epochs", "1"], device="cpu")
    assert table["Dataset"].tolist() == ["Split 1", "Split 2", "Median", "Std"]
    splits = table.iloc[:2]
    for column in ("PLCC", "SRCC", "RMSE"):
        assert table.loc[2, column] == pytest.approx(splits[column].median())
        assert table.loc[3, column] == pytest.approx(splits[column].std(ddof=1))
    assert pd.read_csv(tmp_path / "ft" / "results.csv")["Dataset"].tolist()[2:] == ["Median", "Std"]
    (_, per_split, columns), _ = drawn[0]  # splits.png: the PLCC and SRCC of the split rows
    assert list(columns) == ["PLCC", "SRCC"]
    pd.testing.assert_frame_equal(per_split, splits, check_dtype=False)
    png_image(tmp_path / "ft" / figures.SPLITS)
    full = read_table("konvid", labels)
    for r in (1, 2):
        run = tmp_path / "ft" / f"split_{r:02d}"
        checkpoint = load_checkpoint(run / "best.pt")
        assert checkpoint["settings"]["init"] == str(best)  # fine-tuned from the checkpoint
        expected_test = random_split(full, 0.05, 0.34, 5 + r - 1)["test"]["video_id"]
        predictions = pd.read_csv(run / "predictions_test.csv", dtype={"video_id": str})
        assert sorted(predictions["video_id"]) == sorted(expected_test)
        written = pd.read_csv(run / "splits.csv", dtype={"video_id": str})  # the split on disk
        assert sorted(written.loc[written["split"] == "test", "video_id"]) == sorted(expected_test)
        own = json.loads((run / "results.json").read_text())[0]
        assert own["SRCC"] == pytest.approx(table.loc[r - 1, "SRCC"], nan_ok=True)


@pytest.mark.slow
def test_finetune_start_and_command_line_checks(trained, tmp_path):
    labels, frames, maps, best = trained
    item = ev.LabelledSet("konvid", labels, frames, maps)
    # each split's train_lsvq.py: the set, the options after --, then the start, which wins
    scratch = tl.parse_args([*finetune.set_options(item), "--no-pretrained", "--backbone", "resnet50",
                             *finetune.starting_point(best, True)])
    assert scratch.init is None and scratch.weights is None and scratch.backbone == "resnet18"
    assert tl.parse_args([*finetune.set_options(item), *finetune.starting_point(best, False)]).init == str(best)
    with pytest.raises(ValueError, match="--checkpoint"):
        finetune.starting_point(None, False)

    args = ev.parse_args(["--checkpoint", "c.pt", "--dataset", "konvid", "--labels", "l", "--frames",
                          "f", "--finetune-splits", "--", "--epochs", "3"])
    assert args.finetune_splits == 10 and args.train_options == ["--epochs", "3"] and args.out == "eval"
    assert ev.parse_args(["--checkpoint", "c.pt", "--videos", "a.mp4"]).out == "scores.csv"
    for bad in (["--checkpoint", "c.pt", "--dataset", "konvid", "--labels", "l"],
                ["--checkpoint", "c.pt", "--dataset", "konvid", "--labels", "l", "--frames", "f",
                 "--saliency", "s", "--saliency", "t"],
                ["--dataset", "konvid", "--labels", "l", "--frames", "f"],
                ["--checkpoint", "c.pt", "--videos", "a.mp4", "--dataset", "konvid"]):
        with pytest.raises(SystemExit):
            ev.parse_args(bad)
