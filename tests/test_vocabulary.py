"""One vocabulary across the scripts (docs/design.md, "Command lines"): renamed options keep
their old names for one release with a one-line note, the options both trainers share are
declared once, and each list (metrics, failure kinds, datasets) is written once: a metric added
to metrics.py reaches the log, the epoch's line, the curves and the tables with no other
change."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import benchmark
import evaluate_vqa
import extract_frame
import inference_sal
import metrics
import train_lsvq
import train_sal
from dagr import ablation, failures, figures
from dagr.cli import deprecated_alias, script_parser
from dagr.datasets import QUALITY_SETS, SALIENCY_SETS
from dagr.evaluation import results_table
from dagr.distributed import Distributed
from dagr.training import LOG, log_fields, make_optimizer, training_curves, training_schedule
from fakes import tiny_config, tiny_dhf1k
from test_help import script_parser_of

ROOT = Path(__file__).resolve().parents[1]
FAKE = metrics.Metric("fake", "Fake")

# (script, the old form, the new option's dest, the value it gets, the old name in the note)
RENAMED = [
    (train_sal, ["--channels", "8"], "saliency_width", 8, "--channels"),
    (extract_frame, ["a.mp4", "b/"], "videos", ["a.mp4", "b/"], "positional INPUT"),
    (extract_frame, ["--dataset", "konvid", "--labels", "l.csv", "--video-root", "v/"], "root",
     "v/", "--video-root"),
    (inference_sal, ["--video", "a.mp4", "--all-frames"], "videos", ["a.mp4"], "--video"),
    (benchmark, ["--warmup", "3"], "warmup_calls", 3, "--warmup"),
    (train_lsvq, ["--labels", "l.csv", "--grad-clip", "0.5"], "clip_grad", 0.5, "--grad-clip"),
]
SHARED = ("size", "epochs", "batch_size", "lr", "weight_decay", "warmup", "seed", "grad_accum", "clip_grad", "workers",
          "sync_bn", "resume", "slim_checkpoints", "precision", "compile", "device")


@pytest.mark.parametrize("module, argv, dest, value, old", RENAMED,
                         ids=[f"{r[0].__name__} {r[4]}" for r in RENAMED])
def test_an_old_name_still_works_with_one_line_on_stderr(module, argv, dest, value, old, capsys):
    args = module.parse_args(argv)
    assert getattr(args, dest) == value
    new = "--" + dest.replace("_", "-")
    assert capsys.readouterr().err == f"note: {old} is deprecated; use {new}\n"


@pytest.mark.parametrize("module, argv, dest, value, old", RENAMED,
                         ids=[f"{r[0].__name__} {r[4]}" for r in RENAMED])
def test_the_new_name_gives_the_same_without_a_note(module, argv, dest, value, old, capsys):
    new = "--" + dest.replace("_", "-")
    given = [new, *argv] if not old.startswith("-") else [new if a == old else a for a in argv]
    assert getattr(module.parse_args(given), dest) == value
    assert capsys.readouterr().err == ""


def test_an_alias_is_hidden_and_leaves_the_default_alone(capsys):
    parser = script_parser(None)
    deprecated_alias(parser, "--old-width", parser.add_argument(
        "--width", type=int, default=64, help="base width"))
    deprecated_alias(parser, "inputs", parser.add_argument(
        "--videos", nargs="+", metavar="INPUT", help="video files"))
    assert vars(parser.parse_args([])) == {"width": 64, "videos": None}
    assert capsys.readouterr().err == ""  # a positional alias notes only when given
    text = parser.format_help()
    assert "--old-width" not in text and "inputs" not in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--old-width", "wide"])  # the new option's type checks the old name


def test_the_trainers_declare_their_shared_options_once(monkeypatch):
    """Same names, types, forms and help in both trainers; only the defaults are each
    trainer's constants."""
    def declared(module) -> dict[str, tuple]:
        parser = script_parser_of(module, monkeypatch)
        return {a.dest: (tuple(a.option_strings), a.type, a.nargs, a.metavar, a.help, a.choices)
                for a in parser._actions if a.dest in SHARED}
    sal, lsvq = declared(train_sal), declared(train_lsvq)
    assert set(sal) == set(SHARED)
    assert sal == lsvq


@pytest.mark.parametrize("warmup, grad_accum, peak", [(1.0, 1, 10), (1.0, 2, 5), (0.5, 2, 2)])
def test_warmup_counts_epochs_rounded_to_optimizer_steps(warmup, grad_accum, peak):
    """10 batches an epoch: the learning rate peaks after --warmup epochs of optimizer steps,
    however many batches a step takes (half an epoch of 5 steps rounds to 2, half to even)."""
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1.0)
    loader = DataLoader(range(20), batch_size=2)
    schedule = training_schedule(optimizer, warmup, 3, loader, Distributed(), grad_accum)
    rates = []
    for _ in range(3 * 10 // grad_accum):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates.index(max(rates)) == peak - 1 and max(rates) == 1.0



def test_weight_decay_falls_on_weight_matrices_and_kernels_not_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4),
                                torch.nn.Linear(4, 1), torch.nn.LayerNorm(1))
    decayed, exempt = make_optimizer(model, 1e-3, 0.05).param_groups
    assert decayed["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    assert {p.dim() for p in decayed["params"]} == {2, 5}
    assert {p.dim() for p in exempt["params"]} == {1} and len(exempt["params"]) == 6
    # both trainers build their optimizer with it (tests/test_train_*.py check their runs)
    assert train_sal.make_optimizer is train_lsvq.make_optimizer is make_optimizer


# ----------------------------------------------------------------------------- each list once

@pytest.fixture
def fake_metric(request):
    """FAKE appended to a metric list of metrics.py for one test (the lists are read when used)."""
    listed = request.param
    listed.append(FAKE)
    yield listed
    listed.remove(FAKE)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fake_metric", [metrics.SALIENCY_METRICS], indirect=True)
def test_a_saliency_metric_added_to_metrics_py_reaches_log_line_curves_and_ablation(
        fake_metric, tmp_path, monkeypatch, capsys):
    frame_metrics = metrics._frame_metrics  # the one place a metric is computed, per frame
    monkeypatch.setattr(metrics, "_frame_metrics",
                        lambda *args: {**frame_metrics(*args), FAKE.name: 0.25})
    drawn = []
    monkeypatch.setattr(figures, "write_curves",
                        lambda log, panels, title: drawn.append(panels))
    variant = ablation.variants(2)["attention"]
    out = ablation.run_folder(tmp_path / "ablation", variant, 0)
    train_sal.train(tiny_config(tiny_dhf1k(tmp_path / "DHF1K"), out, "--epochs", "1"))
    assert "val_fake" in pd.read_csv(out / LOG).columns
    assert "fake 0.2500" in capsys.readouterr().out  # the epoch's line
    assert ("validation Fake", ["val_fake"]) in drawn[0]
    runs = ablation.collect(tmp_path / "ablation", [variant], [0], 1)
    assert runs["fake"].tolist() == [0.25]
    assert "Fake" in ablation.display_table(ablation.summary(runs)).columns


@pytest.mark.parametrize("fake_metric", [metrics.QUALITY_METRICS], indirect=True)
def test_a_quality_metric_added_to_metrics_py_reaches_log_curves_and_results(fake_metric):
    assert "val_fake" in log_fields(train_lsvq.logged_metrics())
    assert ("validation Fake", ["val_fake"]) in training_curves(train_lsvq.logged_metrics())
    scores = {"plcc": 0.9, "srcc": 0.8, "krcc": 0.7, "rmse": 0.3, "plcc_logistic": 0.9, "n": 5,
              "fake": 0.5}
    table = results_table({"A": scores, "B": scores})
    assert table.loc[table["Dataset"] == "Average", "Fake"].tolist() == [0.5]


def test_the_metric_lists_name_what_the_metric_functions_return():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 8, 8))
    computed = metrics.saliency_metrics(maps, maps, maps > 0.5)
    assert metrics.names(metrics.SALIENCY_METRICS) == list(computed)
    quality = metrics.vqa_metrics(rng.random(6), rng.random(6))
    assert set(metrics.names(metrics.QUALITY_METRICS)) == set(quality) - {"n"}


def test_the_curves_are_those_drawn_before_the_lists_moved():
    """curves.png's panels, titles and order are unchanged (the demo's figures stay the same)."""
    assert training_curves(metrics.SALIENCY_METRICS) == [
        ("training loss", ["train_loss"]),
        ("validation CC, SIM, AUC-J, s-AUC", ["val_cc", "val_sim", "val_auc_j", "val_s_auc"]),
        ("validation NSS", ["val_nss"]), ("validation KLD", ["val_kld"])]
    assert training_curves(train_lsvq.logged_metrics()) == [
        ("training loss", ["train_loss"]),
        ("validation correlations and score", ["val_plcc", "val_srcc", "val_krcc", "val_score"]),
        ("validation RMSE (MOS units)", ["val_rmse"])]


def test_the_failure_kinds_are_listed_once_and_documented():
    table = (ROOT / "docs" / "robustness.md").read_text()
    documented = re.findall(r"^\| `([a-z-]+)` \| ", table, flags=re.M)
    assert documented == list(failures.KINDS)


@pytest.mark.parametrize("module, registry", [
    (extract_frame, QUALITY_SETS), (train_lsvq, QUALITY_SETS), (evaluate_vqa, QUALITY_SETS),
    (train_sal, SALIENCY_SETS)], ids=lambda x: getattr(x, "__name__", ""))
def test_every_dataset_choice_comes_from_the_registry(module, registry, monkeypatch):
    parser = script_parser_of(module, monkeypatch)
    action = next(a for a in parser._actions if a.dest == "dataset")
    assert list(action.choices) == sorted(registry)


def test_the_default_saliency_warmup_is_the_100_steps_it_was():
    """train_sal.py counted 100 optimizer steps; a DHF1K epoch is 600 (600 videos x 4 clips,
    4 clips a batch), so its default in epochs rounds back to exactly 100."""
    steps = 600 * train_sal.CLIPS_PER_VIDEO // train_sal.BATCH_SIZE // train_sal.GRAD_ACCUM
    assert round(train_sal.WARMUP * steps) == 100
