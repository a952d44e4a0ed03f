"""dagr/api.py: `from dagr import load_model` scores videos from Python with the numbers of
`evaluate_vqa.py --videos`, from an exported model file or from the two checkpoints, and says
which MOS scale they are on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import evaluate_vqa
from dagr import demo_data, load_model
from dagr.checkpoints import save_checkpoint

from fakes_vqa import SIZE
from sal_withreg import build_saliency_model
from VQA import build_quality_model

pytestmark = pytest.mark.usefixtures("one_thread")

SAL_KWARGS = {"channels": 4, "registers": 2, "register_mode": "attention",
              "register_write": "film"}
MOS_SCALE = {"low": 1.0, "high": 5.0}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Untrained checkpoints as the trainers write them, and the model file exported from them."""
    base = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    saliency = build_saliency_model(**SAL_KWARGS)
    save_checkpoint(base / "saliency.pt", {"kind": "saliency", "model_kwargs": SAL_KWARGS,
                                           "model_state": saliency.state_dict(),
                                           "settings": {"size": list(SIZE)}})
    quality = build_quality_model(backbone="resnet18", weights=None, layers=1, feedforward=64)
    save_checkpoint(base / "quality.pt", {"kind": "quality", "model_kwargs": quality.config,
                                          "model_state": quality.state_dict(),
                                          "mos_scale": MOS_SCALE, "frame_size": list(SIZE)})
    paths = {"quality": base / "quality.pt", "saliency": base / "saliency.pt",
             "file": base / "dagr.safetensors"}
    assert evaluate_vqa.main(["--export", str(paths["file"]), "--checkpoint", str(paths["quality"]),
                              "--saliency-checkpoint", str(paths["saliency"])]) == 0
    return paths


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(1)
    paths = []
    for name, strength in (("clean", 0.0), ("noisy", 0.9), ("blurred", 0.5)):
        scene = demo_data.moving_object_scene(10, SIZE, rng)
        paths.append(folder / f"{name}.mp4")
        demo_data.write_mp4(paths[-1], demo_data.distorted_clip(scene, "noise", "whole", strength, rng))
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    return paths


def test_load_model_scores_as_evaluate_vqa_does(models, videos, tmp_path):
    model = load_model(models["file"], device="cpu")
    scores = model.score(videos, workers=0)
    assert list(scores) == [str(v) for v in videos]
    assert scores.mos_range == model.mos_range == (1.0, 5.0)
    assert "training MOS scale 1 to 5" in repr(scores) and scores.failures == {}
    assert evaluate_vqa.main(["--model", str(models["file"]), "--videos", *map(str, videos),
                              "--out", str(tmp_path / "scores.csv"), "--workers", "0",
                              "--device", "cpu"]) == 0
    written = pd.read_csv(tmp_path / "scores.csv").set_index("video")["score"]
    for video in videos:  # the CSV keeps 6 significant digits
        assert scores[video] == pytest.approx(written[str(video)], rel=1e-5)


def test_the_two_checkpoints_give_the_same_scores_as_the_model_file(models, videos):
    from_file = load_model(models["file"], device="cpu").score(videos, workers=0)
    from_checkpoints = load_model(models["quality"], models["saliency"],
                                  device="cpu").score(videos, workers=0)
    assert dict(from_checkpoints) == pytest.approx(dict(from_file), abs=1e-6)


def test_an_unreadable_video_is_a_failure_not_an_exception(models, videos):
    broken = videos[0].with_name("broken.mp4")
    scores = load_model(models["file"], device="cpu").score([videos[0], broken], workers=0)
    assert list(scores) == [str(videos[0])]
    assert scores.failures[str(broken)].kind == "not-media"
    assert "1 could not be read" in repr(scores)


def test_what_is_not_a_model_is_refused_naming_it(models, tmp_path):
    with pytest.raises(ValueError, match="quality.pt: .* give the saliency network.s checkpoint"):
        load_model(models["quality"], device="cpu")
    with pytest.raises(ValueError, match="holds both networks"):
        load_model(models["file"], models["saliency"], device="cpu")
    (tmp_path / "fake.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="fake.safetensors: not a readable safetensors"):
        load_model(tmp_path / "fake.safetensors", device="cpu")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt", models["saliency"], device="cpu")


def test_one_path_a_folder_or_a_list_all_score_the_same_videos(models, videos):
    model = load_model(models["file"], device="cpu")
    one = model.score(str(videos[0]), workers=0)
    assert list(one) == [str(videos[0])] and one.failures == {}
    assert one[str(videos[0].parent) + "//." + "/" + videos[0].name] == one[videos[0]]
    assert list(model.score(videos[0], workers=0)) == [str(videos[0])]  # a PathLike
    folder = model.score(videos[0].parent, workers=0)  # recursing as --videos does
    assert sorted(folder) == sorted(str(v) for v in videos)
    assert list(folder.failures) == [str(videos[0].with_name("broken.mp4"))]
    listed = model.score([videos[0].parent], workers=0)
    assert dict(listed) == pytest.approx(dict(folder))


def test_a_missing_video_among_others_is_a_failure_and_alone_an_exception(models, videos,
                                                                           tmp_path):
    model = load_model(models["file"], device="cpu")
    scores = model.score([videos[0], tmp_path / "typo.mp4"], workers=0)
    assert list(scores) == [str(videos[0])]
    assert scores.failures[str(tmp_path / "typo.mp4")].kind == "missing"
    with pytest.raises(FileNotFoundError, match="typo.mp4: no such file or folder"):
        model.score(tmp_path / "typo.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no video file found"):
        model.score(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"score\(videos=\[\]\): give a video file"):
        model.score([])


def test_a_model_says_what_it_is(models):
    text = repr(load_model(models["file"], device="cpu"))
    assert text.startswith(f"<DAGR-VQA model ({models['file']}): scores on the training MOS "
                           "scale ")
    assert "; trained on " in text


def test_a_device_that_is_not_here_is_a_python_exception_in_the_api_s_words(models,
                                                                            monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"device='cuda': PyTorch sees no CUDA GPU on this "
                                           r"machine; use device='cpu'"):
        load_model(models["file"], device="cuda")
    with pytest.raises(ValueError, match="device='gpu': not a device name PyTorch knows"):
        load_model(models["file"], device="gpu")


def test_a_missing_saliency_checkpoint_is_named_as_the_saliency_argument(models):
    with pytest.raises(ValueError, match=r"give the saliency network's checkpoint too "
                                         r"\(saliency=\)"):
        load_model(models["quality"], device="cpu")


def test_scores_carry_their_scale_training_data_and_model_and_save_with_them(models, videos,
                                                                            tmp_path):
    scores = load_model(models["quality"], models["saliency"], device="cpu").score(
        videos[:2], workers=0)
    assert scores.meta["mos_range"] == [1.0, 5.0] and scores.mos_range == (1.0, 5.0)
    assert scores.meta["model"] == {"quality_checkpoint": str(models["quality"].resolve()),
                                    "saliency_checkpoint": str(models["saliency"].resolve())}
    assert scores.meta["trained_on"].startswith("unknown")  # these checkpoints store no record
    assert "1 (worst) to 5 (best)" in scores.meta["score_column"]
    sidecar = scores.to_csv(tmp_path / "mine.csv")
    assert sidecar == tmp_path / "mine.meta.json"
    assert json.loads(sidecar.read_text()) == scores.meta
    written = pd.read_csv(tmp_path / "mine.csv").set_index("video")["score"]
    assert written.to_dict() == pytest.approx(dict(scores), rel=1e-5)


def test_the_command_line_lists_a_missing_video_goes_on_and_writes_the_sidecar(models, videos,
                                                                              tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert evaluate_vqa.main(["--model", str(models["file"]), "--videos", str(videos[0]),
                              str(tmp_path / "typo.mp4"), "--out", str(out), "--workers", "0",
                              "--device", "cpu"]) == 1
    assert list(pd.read_csv(out)["video"]) == [str(videos[0])]
    failed = pd.read_csv(tmp_path / "scores_failures.csv")
    assert failed.to_dict("records") == [{"video": str(tmp_path / "typo.mp4"), "kind": "missing",
                                          "problem": f"{tmp_path / 'typo.mp4'}: no such file"}]
    assert f"{tmp_path / 'typo.mp4'}: no such file" in capsys.readouterr().err
    meta = json.loads((tmp_path / "scores.meta.json").read_text())
    assert meta["model"] == {"model_file": str(models["file"].resolve())}
    assert meta["mos_range"] == [1.0, 5.0] and meta["format"] == "dagr-vqa-scores"
