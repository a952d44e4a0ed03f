"""The precision and compile policy (precision.py) and the GPU paths run on the CPU: native bf16
detection on both kinds of CPU, bf16 training of both networks against fp32, compiled against
eager, and the check command at its CPU size.

Margins. bf16 keeps 8 bits of mantissa, so one forward pass differs from fp32 by about 1 %,
and a bf16 training run follows another path than an fp32 one: the tests ask bf16 training to
learn as fp32 does (the loss falls, its last value within LOSS_MARGIN of the first fp32 loss)
and bf16 validation of the same weights to be close (saliency CC within CC_MARGIN, quality
predictions within PREDICTION_MARGIN MOS). Compiled tests use the "aot_eager" backend
(precision.compile_model): dynamo's graph capture and AOT autograd, the parts that see the
wrappers, state-dict prefixes and autocast; inductor's C++ code generation takes minutes per
network on a 2-core CPU (measured: 3.5 min for the tiny saliency network's training step).
"""
from __future__ import annotations

import copy
import functools
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

import benchmark
from dagr import precision as prec
from dagr.checkpoints import plain_state_dict, unwrap
from dagr.evaluation import clip_loader, predict
from dagr.losses import quality_loss, saliency_loss
from dagr.training import Objective, TrainingRun, train_epoch
import train_lsvq
import train_sal
from dagr import training_speed
from dataloader import MosScale
from dagr.datasets import read_table
from fakes import tiny_config, tiny_dhf1k
from fakes_vqa import stored_quality_set, train_config
from sal_withreg import build_saliency_model
from test_benchmark import TINY
from VQA import QualityNet

pytestmark = pytest.mark.usefixtures("one_thread")

LOSS_MARGIN = 0.15        # share of the first fp32 loss
CC_MARGIN = 0.02
PREDICTION_MARGIN = 0.05  # MOS, on a 1-5 scale


# ----------------------------------------------------------------------------- the policy

def test_native_bf16_is_read_from_the_cpu_flags_on_both_kinds_of_cpu():
    avx2_epyc = {"fpu", "sse4_2", "avx", "avx2", "fma"}
    assert not prec.native_bf16(avx2_epyc, "AVX2")
    assert prec.native_bf16(avx2_epyc | {"avx512f", "avx512_bf16"}, "AVX512")
    assert prec.native_bf16(avx2_epyc | {"amx_bf16", "amx_tile"}, "AVX512")
    assert not prec.native_bf16({"avx512f"}, "AVX512")  # AVX-512 alone emulates bf16
    # without /proc/cpuinfo, PyTorch's kernel choice tells
    assert prec.native_bf16(set(), "AMX") and not prec.native_bf16(set(), "AVX2")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_is_measured_only_where_native_and_warned_about_once(native, monkeypatch, capsys):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(prec, "_EMULATION_WARNED", [])
    measured, skipped = prec.native_precisions("cpu")
    assert measured == (["fp32", "bf16"] if native else ["fp32"])
    assert (skipped == {}) if native else ("AVX512-BF16" in skipped["bf16"])
    assert prec.native_precisions("cuda") == (["fp32", "bf16"], {})
    assert prec.resolve_precision("bf16", "cpu") == prec.resolve_precision("bf16", "cpu")
    notes = capsys.readouterr().err.count("bf16 is emulated")
    assert notes == (0 if native else 1)
    assert prec.resolve_precision(None, "cpu") == "fp32"
    assert prec.resolve_precision(None, "cuda") == "bf16"
    with pytest.raises(ValueError):
        prec.resolve_precision("fp16", "cpu")


def test_every_script_takes_precision_and_compile_the_same_way():
    import evaluate_vqa
    import inference_sal

    assert train_sal.parse_args(["--precision", "bf16", "--compile"]).precision == "bf16"
    config = train_lsvq.parse_args(["--labels", "x.csv", "--compile"])
    assert config.compile and config.precision is None  # the device's default, at run time
    assert inference_sal.parse_args(["--frames", "f", "--precision", "fp32"]).precision == "fp32"
    assert evaluate_vqa.parse_args(["--checkpoint", "c", "--videos", "v", "--compile"]).compile
    with pytest.raises(SystemExit):
        train_sal.parse_args(["--precision", "fp16"])


# ----------------------------------------------------------------------------- the benchmark

def test_measurements_are_bounded_by_time():
    seconds = training_speed.seconds_per_call(lambda: time.sleep(0.02), torch.device("cpu"),
                                           warmup=0, repeats=1000, budget=0.1)
    assert 0.015 < seconds < 0.2  # a handful of calls, not a thousand


def test_benchmark_without_native_bf16_measures_fp32_and_says_why(tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    argv = [a for a in TINY if a not in ("--precisions", "bf16")]
    argv.remove("fp32")
    out = tmp_path / "bench.json"
    assert benchmark.main([*argv, "--train", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["precisions"] == ["fp32"]
    assert "bf16" in report["settings"]["skipped_precisions"]
    assert {row["precision"] for row in report["model_only"] + report["training"]} == {"fp32"}
    assert [row["part"] for row in report["training"]] == ["saliency", "quality"]
    err = capsys.readouterr()
    assert "bf16 not measured" in err.err
    progress = [line for line in err.err.splitlines() if line.startswith("  ")]
    assert len(progress) == 3 + 2 + 1 + 1 + 1 + 1  # model, training, decode, e2e, one, original
    assert "Time to reproduce the paper on this machine" in err.out
    assert "only a dry run" in err.out
    column = report["time_to_reproduce"][0]["rows"]
    assert column[-1]["hours"] == pytest.approx(sum(r["hours"] for r in column[:-1]))
    assert column[0]["hours"] == pytest.approx(
        training_speed.LSVQ_VIDEOS / report["decode_only"]["videos_per_s"] / 3600)


def test_time_to_reproduce_multiplies_the_work_by_the_rates():
    rows = training_speed.reproduce_rows({"saliency": 1.0, "quality": 2.0},
                                         {"saliency": 10.0, "quality": 20.0}, 5.0,
                                         benchmark.TRAINERS)
    hours = {row["stage"].split(" (")[0]: row["hours"] * 3600 for row in rows}
    assert hours["Frame extraction"] == pytest.approx(39_017 / 5.0)
    assert hours["Saliency maps"] == pytest.approx(39_017 / 10.0)
    assert hours["Saliency training"] == pytest.approx(600 * 4 * 20 / 1.0 + 100 * 2 * 20 / 10.0)
    val = round(0.05 * 28_056)
    assert hours["Quality training"] == pytest.approx(
        (28_056 - val) * 20 / 2.0 + (val * 20 + 7_400 + 3_561) / 20.0)


# ----------------------------------------------------------------------------- bf16 training

@pytest.mark.slow
def test_bf16_saliency_training_learns_like_fp32(tmp_path):
    root = tiny_dhf1k(tmp_path / "DHF1K")
    logs = {}
    for precision in ("fp32", "bf16"):
        config = tiny_config(root, tmp_path / precision, "--precision", precision,
                             "--epochs", "3")
        train_sal.train(config)
        logs[precision] = pd.read_csv(tmp_path / precision / "log.csv")
    fp32, bf16 = logs["fp32"]["train_loss"], logs["bf16"]["train_loss"]
    assert np.isfinite(bf16).all() and np.isfinite(logs["bf16"]["val_cc"]).all()
    assert bf16.iloc[-1] < bf16.iloc[0] and fp32.iloc[-1] < fp32.iloc[0]
    assert abs(bf16.iloc[-1] - fp32.iloc[-1]) <= LOSS_MARGIN * fp32.iloc[0]
    # validation of the same weights in both precisions
    scores = {p: train_sal.evaluate(tmp_path / "fp32" / "best.pt", "dhf1k", root, device="cpu",
                                    progress=False, precision=p) for p in ("fp32", "bf16")}
    assert abs(scores["bf16"]["cc"] - scores["fp32"]["cc"]) <= CC_MARGIN


@pytest.mark.slow
def test_bf16_quality_training_learns_like_fp32(tmp_path):
    labels, frames, maps = stored_quality_set(tmp_path)
    table = read_table("konvid", labels).iloc[[0, 4, 7, 11]]
    loader = clip_loader(table, frames, maps, MosScale(1.0, 5.0), (32, 56), 4, 0)
    losses, models = {}, {}
    for precision in ("fp32", "bf16"):
        config = train_config(labels, frames, maps, tmp_path / "unused", "--precision", precision)
        torch.manual_seed(0)
        models[precision] = QualityNet(backbone="resnet18", weights=None, dropout=0.0)
        optimizer = torch.optim.AdamW(models[precision].parameters(), lr=1e-4)
        run = TrainingRun(
            out=None, model=models[precision], model_kwargs={}, optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
            loader=loader, objective=Objective(train_lsvq.clip_scores, functools.partial(
                train_lsvq.clip_loss, config=config)),
            validate=dict, best_metric="score", logged=(), curves_title="",
            settings={}, payload={}, epochs=6, device=torch.device("cpu"),
            precision=precision, clip_grad=config.clip_grad)
        losses[precision] = [train_epoch(run, "epoch") for _ in range(6)]
    fp32, bf16 = losses["fp32"], losses["bf16"]
    assert all(math.isfinite(v) for v in bf16)
    assert np.mean(bf16[-2:]) < 0.5 * bf16[0], bf16
    assert abs(bf16[-1] - fp32[-1]) <= LOSS_MARGIN * fp32[0]
    predictions = {p: predict(models["fp32"], loader, torch.device("cpu"), False, p)
                   for p in ("fp32", "bf16")}
    gap = (predictions["fp32"]["prediction"] - predictions["bf16"]["prediction"]).abs().max()
    assert gap <= PREDICTION_MARGIN


# ----------------------------------------------------------------------------- compiled

def saliency_case():
    model = build_saliency_model(2, 2)
    clips, maps = torch.rand(2, 3, 4, 16, 24), torch.rand(2, 1, 4, 16, 24)
    return model, (clips,), lambda out: saliency_loss(out, maps, None, 1.0, 1.0, 0.0)


def quality_case():
    model = QualityNet("resnet18", weights=None, saliency_alpha=0.5, dropout=0.0)
    clips, maps, target = torch.rand(2, 4, 3, 32, 56), torch.rand(2, 4, 1, 32, 56), torch.rand(2)
    return model, (clips, maps), lambda out: quality_loss(out.float(), target, 1.0, 0.3)


@pytest.mark.slow
@pytest.mark.parametrize("case", [saliency_case, quality_case], ids=["saliency", "quality"])
def test_compiled_and_eager_give_the_same_training_step_and_inference(case, monkeypatch):
    monkeypatch.setenv(prec.COMPILE_BACKEND_VARIABLE, "aot_eager")
    torch.manual_seed(0)
    eager, inputs, loss_of = case()
    compiled = prec.compile_model(copy.deepcopy(eager), True)
    losses, grads = [], []
    for model in (eager, compiled):
        model.train()
        loss = loss_of(model(*inputs))
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in unwrap(model).parameters()
                                if p.grad is not None]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-5)
    assert torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-5)
    outputs = []
    for model in (eager, compiled):
        model.eval()
        with torch.inference_mode():
            outputs.append(model(*inputs))
    assert torch.allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    state = plain_state_dict(compiled.state_dict())
    eager.load_state_dict(state)  # a compiled model's weights load into a plain one


# ----------------------------------------------------------------------------- the check

@pytest.mark.slow
def test_the_check_command_passes_at_its_cpu_size(capsys):
    assert benchmark.main(["--device", "cpu", "--check"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith(("PASS", "FAIL"))]
    assert len(lines) == 9 and all(line.startswith("PASS") for line in lines), lines
