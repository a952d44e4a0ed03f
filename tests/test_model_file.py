"""Checkpoints that load without running code, and the one shared model file
(`evaluate_vqa.py --export`, then `--model`): a crafted pickle, a foreign file and a truncated
checkpoint are refused in one line at every entry point that takes a checkpoint; the exported
file scores as the two checkpoints do; a damaged, foreign or newer model file gets one line
naming it."""
from __future__ import annotations

import json
import os
import stat
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dagr import demo_data as dq
import evaluate_vqa
import inference_sal
from dagr import model_file
import train_lsvq
import train_sal
from fakes import tiny_dhf1k
from fakes_vqa import SIZE, saliency_checkpoint, stored_quality_set, train_argv
from dagr.checkpoints import save_checkpoint
from sal_withreg import build_saliency_model
from dagr.checkpoints import training_payload
from dagr.training import warmup_cosine
from VQA import build_quality_model

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = ["--device", "cpu", "--workers", "0"]
SAL_KWARGS = {"channels": 4, "registers": 2, "register_mode": "attention",
              "register_write": "film"}


class MarkerMaker:
    """Unpickling this object opens (creates) a file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted_files(folder: Path, marker: Path) -> list[Path]:
    """A torch.save checkpoint that holds the object beside real-looking fields, and a plain
    pickle of it: loading either without weights_only would create `marker`."""
    folder.mkdir(parents=True, exist_ok=True)
    zipped, raw = folder / "crafted.pt", folder / "crafted_raw.pt"
    torch.save({"kind": "quality", "model_state": {}, "model_kwargs": MarkerMaker(marker)}, zipped)
    raw.write_bytes(pickle.dumps(MarkerMaker(marker), protocol=2))
    return [zipped, raw]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny untrained checkpoints as the trainers describe them: saliency (U-Net with
    registers), quality with saliency on, quality with saliency off."""
    base = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    saliency = build_saliency_model(**SAL_KWARGS)
    save_checkpoint(base / "saliency.pt", {
        "kind": "saliency", "model_kwargs": SAL_KWARGS, "model_state": saliency.state_dict(),
        "settings": {"size": list(SIZE), "clip_len": 6}, "epoch": 3, "metrics": {"cc": 0.5},
        "optimizer_state": {"state": {}, "param_groups": []}})
    paths = {"saliency": base / "saliency.pt"}
    for name, alpha in (("quality", 0.5), ("quality_off", 0.0)):
        quality = build_quality_model(backbone="resnet18", weights=None, layers=1,
                                      feedforward=64, saliency_alpha=alpha)
        paths[name] = base / f"{name}.pt"
        save_checkpoint(paths[name], {
            "kind": "quality", "model_kwargs": quality.config, "model_state": quality.state_dict(),
            "mos_scale": {"low": 1.0, "high": 5.0}, "frame_size": list(SIZE),
            "settings": {"dataset": "konvid", "size": list(SIZE)}, "epoch": 2,
            "metrics": {"srcc": 0.7}, "optimizer_state": {"state": {}, "param_groups": []}})
    return paths


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for name, strength in (("clean", 0.0), ("noisy", 0.8)):
        scene = dq.moving_object_scene(12, SIZE, rng)
        clip = dq.distorted_clip(scene, "noise", "whole", strength, rng)
        dq.write_mp4(folder / f"{name}.mp4", clip)
    return folder


@pytest.fixture(scope="module")
def quality_set(tmp_path_factory) -> tuple[Path, Path, Path]:
    return stored_quality_set(tmp_path_factory.mktemp("set"))


def export(out: Path, models: dict[str, Path], *options: str) -> int:
    return evaluate_vqa.main(["--export", str(out), "--checkpoint", str(models["quality"]),
                              "--saliency-checkpoint", str(models["saliency"]), *options])


def score(source: list[str], videos: Path, out: Path, *options: str) -> pd.Series:
    assert evaluate_vqa.main([*source, "--videos", str(videos), "--out", str(out), *CPU,
                              *options]) == 0
    return pd.read_csv(out).set_index("video")["score"]


def one_error_line(capsys, path: Path) -> str:
    """stderr must be one `error: PATH: ...` line (no traceback, no warnings); returns it."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), lines
    return lines[0]


# ----------------------------------------------------------------------------- crafted pickles

def foreign_and_damaged(folder: Path, models: dict[str, Path]) -> dict[Path, str]:
    """{file: what loading it as a checkpoint must say}: a plain state dict (not a DAGR-VQA
    checkpoint) and the first half of a real checkpoint."""
    foreign, truncated = folder / "state_dict.pt", folder / "truncated.pt"
    torch.save(build_saliency_model(channels=2, registers=0).state_dict(), foreign)
    whole = models["quality"].read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    return {foreign: "not a DAGR-VQA checkpoint", truncated: "not a readable checkpoint"}


@pytest.mark.slow
def test_a_crafted_pickle_is_refused_at_every_entry_point(tmp_path, models, quality_set, videos,
                                                          capsys) -> None:
    labels, frames, maps = quality_set
    marker = tmp_path / "marker"
    root = tiny_dhf1k(tmp_path / "DHF1K", n_train=1, n_val=1, frames=4)
    good_q, good_s = str(models["quality"]), str(models["saliency"])
    labelled = ["--dataset", "konvid", "--labels", str(labels), "--frames", str(frames),
                "--saliency", str(maps), "--out", str(tmp_path / "eval"), *CPU]
    scoring = ["--videos", str(videos), "--out", str(tmp_path / "s.csv"), *CPU]
    expected = dict.fromkeys(crafted_files(tmp_path / "files", marker),
                             ("refused", "not a readable checkpoint"))
    expected |= {path: (reason,) for path, reason in
                 foreign_and_damaged(tmp_path / "files", models).items()}
    for crafted, reasons in expected.items():
        resume = tmp_path / f"resume_{crafted.stem}"
        resume.mkdir()
        (resume / "last.pt").write_bytes(crafted.read_bytes())
        runs = {  # entry point: (command, the file it is handed)
            "train_sal --evaluate": (lambda: train_sal.main(
                ["--evaluate", str(crafted), "--root", str(root), *CPU]), crafted),
            "train_sal --resume": (lambda: train_sal.main(
                ["--root", str(root), "--out", str(resume), "--saliency-width", "4", "--registers", "0",
                 "--size", *map(str, SIZE), "--clip-len", "4", "--resume", *CPU]),
                resume / "last.pt"),
            "train_lsvq --resume": (lambda: train_lsvq.main(
                train_argv(labels, frames, maps, resume, "--epochs", "1", "--resume")),
                resume / "last.pt"),
            "train_lsvq --init": (lambda: train_lsvq.main(
                [o for o in train_argv(labels, frames, maps, tmp_path / "t")
                 if o != "--no-pretrained"] + ["--init", str(crafted)]), crafted),
            "train_lsvq --weights": (lambda: train_lsvq.main(
                [o for o in train_argv(labels, frames, maps, tmp_path / "w")
                 if o != "--no-pretrained"] + ["--weights", str(crafted)]), crafted),
            "evaluate_vqa --checkpoint (labelled)": (lambda: evaluate_vqa.main(
                ["--checkpoint", str(crafted), *labelled]), crafted),
            "evaluate_vqa --model (labelled)": (lambda: evaluate_vqa.main(
                ["--model", str(crafted), *labelled]), crafted),
            "evaluate_vqa --checkpoint (scoring)": (lambda: evaluate_vqa.main(
                ["--checkpoint", str(crafted), "--saliency-checkpoint", good_s, *scoring]),
                crafted),
            "evaluate_vqa --saliency-checkpoint": (lambda: evaluate_vqa.main(
                ["--checkpoint", good_q, "--saliency-checkpoint", str(crafted), *scoring]),
                crafted),
            "evaluate_vqa --model (scoring)": (lambda: evaluate_vqa.main(
                ["--model", str(crafted), *scoring]), crafted),
            "evaluate_vqa --export": (lambda: evaluate_vqa.main(
                ["--export", str(tmp_path / "x.safetensors"), "--checkpoint", good_q,
                 "--saliency-checkpoint", str(crafted)]), crafted),
            "inference_sal --checkpoint": (lambda: inference_sal.main(
                ["--checkpoint", str(crafted), "--frames", str(frames),
                 "--out", str(tmp_path / "maps"), *CPU]), crafted),
            "inference_sal --model": (lambda: inference_sal.main(
                ["--model", str(crafted), "--frames", str(frames),
                 "--out", str(tmp_path / "maps"), *CPU]), crafted),
        }
        for name, (run, given) in runs.items():
            assert run() == 2, name
            line = one_error_line(capsys, given)
            assert not marker.exists(), name
            if "--model" not in name:  # a model file is never unpickled at all
                assert any(reason in line for reason in reasons) or (
                    name == "train_lsvq --weights" and "state dict" in line), (name, line)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "x.safetensors").exists()
    refused = one_line_of(crafted_files(tmp_path / "again", marker)[0], capsys)
    assert "refused: it holds objects other than tensors and plain values" in refused


def one_line_of(crafted: Path, capsys) -> str:
    assert inference_sal.main(["--checkpoint", str(crafted), "--frames", "x", *CPU]) == 2
    return one_error_line(capsys, crafted)


# ----------------------------------------------------------------------------- export and --model

def test_the_exported_file_scores_and_maps_as_the_two_checkpoints(tmp_path, models, videos,
                                                                  quality_set, capsys) -> None:
    fp32, bf16 = tmp_path / "dagr.safetensors", tmp_path / "dagr_bf16.safetensors"
    assert export(fp32, models) == 0 and export(bf16, models, "--precision", "bf16") == 0
    capsys.readouterr()
    with safe_open(str(fp32), framework="pt") as handle:
        meta = json.loads(handle.metadata()[model_file.METADATA_KEY])
        keys = list(handle.keys())
    assert meta["format_version"] == model_file.FORMAT_VERSION and meta["precision"] == "fp32"
    assert meta["quality"]["mos_scale"] == {"low": 1.0, "high": 5.0}
    assert meta["quality"]["frame_size"] == list(SIZE) and meta["quality"]["saliency_alpha"] == 0.5
    assert meta["quality"]["frames_per_clip"] == evaluate_vqa.FRAMES_PER_VIDEO
    assert meta["saliency"]["model_kwargs"] == SAL_KWARGS
    assert meta["saliency"]["settings"]["size"] == list(SIZE)
    assert all(k.startswith(("quality.", "saliency.")) for k in keys)
    assert not any("optimizer" in k or "exp_avg" in k for k in keys)
    assert bf16.stat().st_size < 0.6 * fp32.stat().st_size

    both = ["--checkpoint", str(models["quality"]), "--saliency-checkpoint",
            str(models["saliency"])]
    want = score(both, videos, tmp_path / "a.csv")
    got = score(["--model", str(fp32)], videos, tmp_path / "b.csv")
    assert len(want) == 2 and np.abs(got - want).max() <= 1e-6
    rounded = score(["--model", str(bf16)], videos, tmp_path / "c.csv")
    assert 0 < np.abs(rounded - want).max() < 0.05  # bf16 weights: a small, measurable change
    print(f"bf16 weights change the scores by at most {np.abs(rounded - want).max():.2e} MOS")

    labels, frames, maps = quality_set
    labelled = ["--dataset", "konvid", "--labels", str(labels), "--frames", str(frames),
                "--saliency", str(maps), *CPU]
    assert evaluate_vqa.main(["--checkpoint", str(models["quality"]), *labelled,
                              "--out", str(tmp_path / "e1")]) == 0
    assert evaluate_vqa.main(["--model", str(fp32), *labelled, "--out", str(tmp_path / "e2")]) == 0
    name = "predictions_KoNViD-1k.csv"
    first, second = (pd.read_csv(tmp_path / e / name) for e in ("e1", "e2"))
    assert np.abs(first["prediction"] - second["prediction"]).max() <= 1e-6

    for source, out in ((["--checkpoint", str(models["saliency"])], "m1"),
                        (["--model", str(fp32)], "m2")):
        assert inference_sal.main([*source, "--frames", str(frames), "--out",
                                   str(tmp_path / out), *CPU]) == 0
    drawn = sorted((tmp_path / "m1").rglob("*.png"))
    assert drawn and all((tmp_path / "m2" / p.relative_to(tmp_path / "m1")).read_bytes()
                         == p.read_bytes() for p in drawn)


def test_a_model_without_saliency_exports_without_a_saliency_checkpoint(tmp_path, models, videos,
                                                                        capsys) -> None:
    off = tmp_path / "off.safetensors"
    assert evaluate_vqa.main(["--export", str(off), "--checkpoint",
                              str(models["quality_off"])]) == 0
    want = score(["--checkpoint", str(models["quality_off"])], videos, tmp_path / "a.csv")
    got = score(["--model", str(off)], videos, tmp_path / "b.csv")
    assert np.abs(got - want).max() <= 1e-6
    capsys.readouterr()
    assert inference_sal.main(["--model", str(off), "--frames", "x", *CPU]) == 2
    assert "holds no saliency network" in one_error_line(capsys, off)
    assert evaluate_vqa.main(["--export", str(tmp_path / "no.safetensors"), "--checkpoint",
                              str(models["quality"])]) == 2
    assert "give --saliency-checkpoint" in one_error_line(capsys, models["quality"])
    assert not (tmp_path / "no.safetensors").exists()


# ----------------------------------------------------------------------------- damaged model files

def rewritten(good: Path, out: Path, meta: dict | None = None, tensors: dict | None = None,
              raw_meta: dict | None = None) -> Path:
    """`good` written again with changed metadata and/or tensors (the others kept)."""
    kept = load_file(str(good))
    if meta is not None:
        raw_meta = {model_file.METADATA_KEY: json.dumps(meta)}
    elif raw_meta is None:
        with safe_open(str(good), framework="pt") as handle:
            raw_meta = handle.metadata()
    save_file(kept if tensors is None else tensors, str(out), metadata=raw_meta)
    return out


def test_damaged_foreign_and_newer_model_files_get_one_line(tmp_path, models, videos,
                                                            capsys) -> None:
    good = tmp_path / "good.safetensors"
    assert export(good, models) == 0
    with safe_open(str(good), framework="pt") as handle:
        meta = json.loads(handle.metadata()[model_file.METADATA_KEY])
    tensors = load_file(str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    no_quality_size = json.loads(json.dumps(meta))
    del no_quality_size["quality"]["frame_size"]
    bad_kwargs = json.loads(json.dumps(meta))
    bad_kwargs["saliency"]["model_kwargs"]["colour"] = "red"
    key = next(k for k in tensors if k.startswith("saliency.") and tensors[k].dim() > 1)
    cases = {  # file: what the one line must say
        truncated: "not a readable safetensors model file",
        rewritten(good, tmp_path / "bare.safetensors", raw_meta={}): "no dagr_vqa metadata",
        rewritten(good, tmp_path / "text.safetensors",
                  raw_meta={model_file.METADATA_KEY: "{not json"}): "metadata is not JSON",
        rewritten(good, tmp_path / "other.safetensors",
                  {**meta, "format": "something-else"}): "not a DAGR-VQA model file",
        rewritten(good, tmp_path / "newer.safetensors",
                  {**meta, "format_version": model_file.FORMAT_VERSION + 1}): "newer DAGR-VQA",
        rewritten(good, tmp_path / "nosize.safetensors", no_quality_size): "'frame_size'",
        rewritten(good, tmp_path / "kwargs.safetensors", bad_kwargs): "do not build the saliency",
        rewritten(good, tmp_path / "missing.safetensors",
                  tensors={k: v for k, v in tensors.items() if k != key}): "missing",
        rewritten(good, tmp_path / "extra.safetensors",
                  tensors={**tensors, "other.w": torch.zeros(1)}): "no network it describes",
        rewritten(good, tmp_path / "shape.safetensors",
                  tensors={**tensors, key: tensors[key][:1]}): "has shape",
    }
    capsys.readouterr()
    for path, reason in cases.items():
        assert evaluate_vqa.main(["--model", str(path), "--videos", str(videos),
                                  "--out", str(tmp_path / "s.csv"), *CPU]) == 2, path.name
        assert reason in one_error_line(capsys, path), path.name
        assert inference_sal.main(["--model", str(path), "--frames", "x", *CPU]) == 2
        assert reason in one_error_line(capsys, path), path.name
    assert not (tmp_path / "s.csv").exists()


def test_a_saliency_network_stored_without_its_size_asks_for_size(tmp_path, capsys) -> None:
    bare = saliency_checkpoint(tmp_path / "bare.pt")  # no training settings
    assert inference_sal.main(["--checkpoint", str(bare), "--frames", "x", *CPU]) == 2
    assert "give --size H W" in one_error_line(capsys, bare)


def test_resuming_from_a_checkpoint_of_other_options_or_no_training_state(tmp_path,
                                                                           models, capsys) -> None:
    root = tiny_dhf1k(tmp_path / "DHF1K", n_train=1, n_val=1, frames=4)
    other = build_saliency_model(channels=2, registers=0)  # the run below is 4 wide
    optimizer = torch.optim.AdamW(other.parameters())
    payloads = {
        "other options": training_payload(other, {"channels": 2, "registers": 0}, optimizer,
                                          warmup_cosine(optimizer, 1, 2), 1, {}, {},
                                          kind="saliency", best_cc=0.0),
        "no training state": torch.load(models["saliency"], weights_only=True),
    }
    expected = {"other options": "cannot resume this run from it",
                "no training state": "cannot resume from it: no rng_state"}
    for name, payload in payloads.items():
        out = tmp_path / name.replace(" ", "_")
        save_checkpoint(out / "last.pt", payload)
        assert train_sal.main(["--root", str(root), "--out", str(out), "--saliency-width", "4",
                               "--registers", "0", "--size", *map(str, SIZE), "--clip-len", "4",
                               "--resume", *CPU]) == 2, name
        assert expected[name] in one_error_line(capsys, out / "last.pt"), name


def test_a_training_checkpoint_given_as_the_model_file_is_named_as_such(tmp_path, models,
                                                                        videos, capsys) -> None:
    legacy = tmp_path / "legacy.pt"
    torch.save({"kind": "quality"}, legacy, _use_new_zipfile_serialization=False)
    capsys.readouterr()
    for checkpoint in (models["quality"], legacy):  # torch.save's zip format, its pickle format
        assert evaluate_vqa.main(["--model", str(checkpoint), "--videos", str(videos),
                                  "--out", str(tmp_path / "s.csv"), *CPU]) == 2
        assert ("this is a training checkpoint (written by torch.save), not an exported model "
                "file: give it with --checkpoint") in one_error_line(capsys, checkpoint)
        assert inference_sal.main(["--model", str(checkpoint), "--frames", "x", *CPU]) == 2
        assert "give it with --checkpoint" in one_error_line(capsys, checkpoint)


def test_the_exported_file_gets_the_mode_of_a_plainly_created_file(tmp_path, models) -> None:
    previous = os.umask(0o022)
    try:
        assert export(tmp_path / "shared.safetensors", models) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.safetensors").stat().st_mode) == 0o644
