"""benchmark.py: a tiny CPU run writes every section of its report and prints the table; the
FLOP count matches the SPEC's full-width figure; the generated clip is a real video. And the
fast inference path it measures: prepared models score like the trained ones, and videos are
scored in batches with unreadable ones passed through."""
from __future__ import annotations

import copy
import json
import math

import cv2
import numpy as np
import pytest
import torch

import benchmark
from dagr.speed import generated_video, gflop_per_clip
from dagr.video_io import count_frames

from dagr.inference import inference_quality, predict_maps, prepare_inference
from dagr.precision import weights_precision
from sal_withreg import build_saliency_model
from dagr.scoring import score_clips, score_items
from VQA import QualityNet

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--device", "cpu", "--saliency-width", "2", "--registers", "2", "--backbone", "resnet18",
        "--size", "32", "56", "--batch-size", "2", "--warmup-calls", "0", "--repeats", "1",
        "--workers", "0", "--generated-size", "48", "64", "--generated-frames", "20",
        "--video-repeats", "3", "--precisions", "fp32", "bf16"]


def test_a_tiny_cpu_run_reports_every_section_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main([*TINY, "--out", str(out)]) == 0
    report = json.loads(out.read_text())

    assert report["device"]["type"] == "cpu" and report["input"]["generated"]
    assert "20 frames of 64x48" in report["input"]["description"]
    model = report["model_only"]
    assert [(row["part"], row["precision"]) for row in model] == [
        (part, precision) for precision in ("fp32", "bf16")
        for part in ("scoring model", "saliency", "quality")]
    for row in model:
        assert math.isfinite(row["clips_per_s"]) and row["clips_per_s"] > 0
        assert row["frames_per_s"] == pytest.approx(8 * row["clips_per_s"])
        assert row["batch"] == 2 and row["peak_memory_mib"] > 0
    by_part = {row["part"]: row for row in model[:3]}
    for key in ("params_m", "gflop_per_clip"):
        assert by_part["saliency"][key] > 0 and by_part["quality"][key] > 0
        assert by_part["scoring model"][key] == pytest.approx(
            by_part["saliency"][key] + by_part["quality"][key])

    decode = report["decode_only"]
    assert decode["videos"] == 3 and decode["repeats"] == 3
    assert decode["source_frames_per_s"] == pytest.approx(20 * decode["videos_per_s"])
    for e2e in report["end_to_end"]:
        assert e2e["videos"] == 3 and e2e["videos_per_s"] > 0
        assert e2e["source_frames_per_s"] == pytest.approx(20 * e2e["videos_per_s"])
        assert e2e["fraction_of_decode_ceiling"] == pytest.approx(
            e2e["videos_per_s"] / decode["videos_per_s"])
    original = report["original_shape"]
    assert original["frames"] == 20 and original["windows"] == 3  # 8 + 8 + one aligned to the end
    for stages in [original, *report["fast_one_video"]]:
        parts = stages["decode_s"] + stages["saliency_s"] + stages["quality_s"]
        assert stages["total_s"] == pytest.approx(parts) and stages["total_s"] > 0
    for speedup, e2e, one in zip(report["speedup"], report["end_to_end"],
                                 report["fast_one_video"]):
        assert speedup["end_to_end"] == pytest.approx(original["total_s"] * e2e["videos_per_s"])
        assert speedup["one_video"] == pytest.approx(original["total_s"] / one["total_s"])

    table = capsys.readouterr().out
    assert table.startswith("System Performance: ")
    labels = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()
              if line.startswith("| ") and not line.startswith("| Measure")]
    assert labels == (["Model only: scoring model", "Model only: saliency",
                       "Model only: quality"] * 2
                      + ["Decode only (ceiling), 0 workers"] + ["End to end (fast path)"] * 2
                      + ["One video, fast path: decode + saliency + quality"] * 2
                      + ["One video, original shape (3 saliency windows)"]
                      + ["Speed-up over the original shape"] * 2)


def test_flops_at_full_width_match_the_spec():
    args = benchmark.parse_args(["--device", "cpu", "--saliency-width", "64", "--registers", "0"])
    flops = gflop_per_clip(args)
    assert flops["saliency"] == pytest.approx(1982, abs=1)  # SPEC section 4
    assert 117.5 < flops["quality"] < 119.5  # ResNet-50 trunk 118 (SPEC section 12) + the rest


def test_the_generated_clip_decodes_with_moving_content(tmp_path):
    path = generated_video(tmp_path, (36, 64), 12, benchmark.GENERATED_FPS)
    assert count_frames(path) == 12
    capture = cv2.VideoCapture(str(path))
    frames = [capture.read()[1] for _ in range(2)]
    capture.release()
    assert frames[0].shape == (36, 64, 3)
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 1


# ----------------------------------------------------------------------------- the fast path

def tiny_models():
    torch.manual_seed(0)
    return (build_saliency_model(4, 2).eval(),
            QualityNet("resnet18", weights=None, saliency_alpha=0.5).eval())


def test_fast_path_models_score_like_the_trained_ones():
    saliency, quality = tiny_models()
    frames = torch.randint(0, 256, (2, 8, 24, 40, 3), dtype=torch.uint8)
    clips = frames.permute(0, 1, 4, 2, 3).float() / 255
    cpu = torch.device("cpu")

    fast = prepare_inference(saliency, cpu, "fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())
    assert all(type(m) is not torch.nn.Conv3d for m in fast.modules())  # oneDNN convolutions
    assert fast.encoders[0][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    plain_maps = predict_maps(saliency, clips, cpu)
    assert (predict_maps(fast, clips, cpu).int() - plain_maps.int()).abs().max() <= 1
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in saliency.modules())  # untouched

    expected = score_clips(quality, saliency, frames, cpu)
    scored = score_clips(inference_quality(copy.deepcopy(quality), cpu, "fp32"), fast, frames, cpu)
    assert torch.allclose(scored, expected, rtol=1e-3, atol=1e-4)

    fast16 = prepare_inference(saliency, cpu, "bf16")
    quality16 = inference_quality(copy.deepcopy(quality), cpu, "bf16")
    assert weights_precision(fast16) == weights_precision(quality16) == "bf16"
    assert all(p.dtype == torch.float32 for m in quality16.modules()
               if isinstance(m, torch.nn.LayerNorm) for p in m.parameters())
    assert predict_maps(fast16, clips, cpu).shape == (2, 8, 24, 40)
    assert torch.isfinite(score_clips(quality16, fast16, frames, cpu)).all()


def test_score_items_batches_the_readable_videos_and_passes_failures_through():
    saliency, quality = tiny_models()
    cpu = torch.device("cpu")
    frames = torch.randint(0, 256, (3, 8, 24, 40, 3), dtype=torch.uint8)
    items = [{"video": "a", "frames": frames[0], "problem": "", "decoded": 10},
             {"video": "bad", "frames": None, "problem": "unreadable", "decoded": 0},
             {"video": "b", "frames": frames[1], "problem": "", "decoded": 20},
             {"video": "c", "frames": frames[2], "problem": "", "decoded": 30}]
    out = list(score_items(quality, saliency, items, 2, cpu))
    assert [item["video"] for item in out] == ["bad", "a", "b", "c"]
    assert out[0]["score"] is None and out[0]["problem"] == "unreadable"
    assert all("frames" not in item for item in out)
    expected = score_clips(quality, saliency, frames, cpu)
    assert [item["score"] for item in out[1:]] == pytest.approx(expected.tolist(), rel=1e-4)
    assert [item["decoded"] for item in out[1:]] == [10, 20, 30]
