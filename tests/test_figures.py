"""figures.py: the figures hold exactly the data they are given (line and point data, titles,
best-epoch and median markers), and are written atomically as real PNG images."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dagr import figures
import train_lsvq
from dagr.training import log_fields, training_curves
from metrics import SALIENCY_METRICS, logistic_map, vqa_metrics

QUALITY_CURVES = training_curves(train_lsvq.logged_metrics())
from pictures import png_image


def quality_log() -> pd.DataFrame:
    """A train_lsvq-style log.csv of 5 epochs; epoch 0's score is undefined (-inf), and the
    trainer marked epochs 0, 1 and 3 as improvements."""
    return pd.DataFrame({
        "epoch": [0, 1, 2, 3, 4], "lr": [1e-4] * 5,
        "train_loss": [1.2, 0.9, 0.8, 0.7, 0.65],
        "val_plcc": [np.nan, 0.40, 0.50, 0.70, 0.60], "val_srcc": [np.nan, 0.30, 0.45, 0.72, 0.58],
        "val_krcc": [np.nan, 0.20, 0.30, 0.50, 0.40], "val_rmse": [0.9, 0.8, 0.7, 0.5, 0.6],
        "val_score": [-np.inf, 0.35, 0.475, 0.71, 0.59], "best": [1, 1, 0, 1, 0]})


def lines_of(axis) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
            for line in axis.get_lines()}


def test_best_epoch_is_the_last_epoch_the_trainer_marked():
    log = quality_log()
    assert figures.best_epoch(log) == 3
    log.loc[4, "best"] = 1
    assert figures.best_epoch(log) == 4
    assert figures.best_epoch(log.assign(best=0)) is None
    assert figures.best_epoch(log.drop(columns="best")) is None
    assert figures.best_epoch(log.assign(best=np.nan)) is None  # an older log, resumed


def test_curves_hold_the_logs_values_and_mark_the_best_epoch(tmp_path):
    log = quality_log()
    figure = figures.curves_figure({"run": log}, QUALITY_CURVES, "title")
    axes = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == [title for title, _ in QUALITY_CURVES]
    for axis, (_, columns) in zip(axes, QUALITY_CURVES):
        lines = lines_of(axis)
        assert set(lines) == {figures._short(c) for c in columns} | {"best epoch 3"}
        for column in columns:
            x, y = lines[figures._short(column)]
            assert x.tolist() == log["epoch"].tolist()
            expected = log[column].replace(-np.inf, np.nan).to_numpy()
            np.testing.assert_array_equal(y, expected)  # nan where undefined, a gap in the line
        assert lines["best epoch 3"][0].tolist() == [3, 3]
    assert figure.get_suptitle() == "title"

    path = tmp_path / "run" / "log.csv"
    path.parent.mkdir()
    log.to_csv(path, index=False)
    written = figures.write_curves(path, QUALITY_CURVES)
    assert written == tmp_path / "run" / figures.CURVES
    width, height = figures.PANEL_SIZE
    png_image(written, (round((height + 0.3) * figures.DPI), round(3 * width * figures.DPI)))


def test_curves_of_several_runs_mark_each_runs_best_epoch():
    one = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.0], "val_cc": [0.1, 0.3, 0.2],
                        "best": [1, 1, 0]})
    two = one.assign(val_cc=[0.2, 0.1, 0.4], best=[1, 0, 1])
    figure = figures.new_figure(8, 3)
    axes = figure.subplots(1, 2)
    figures.draw_curves(axes, {"a": one, "b": two}, [("loss", ["train_loss"]), ("cc", ["val_cc"])])
    lines = lines_of(axes[1])
    assert set(lines) == {"a", "b", "a: best epoch 2", "b: best epoch 3"}
    assert lines["b"][1].tolist() == [0.2, 0.1, 0.4]
    assert lines["a: best epoch 2"][0].tolist() == [2, 2]
    assert lines["b: best epoch 3"][0].tolist() == [3, 3]
    # each run's marker has that run's colour
    colour = {line.get_label(): line.get_color() for line in axes[1].get_lines()}
    assert colour["a"] == colour["a: best epoch 2"] != colour["b"] == colour["b: best epoch 3"]


def test_the_trainers_panels_name_columns_of_their_logs():
    for logged in (SALIENCY_METRICS, train_lsvq.logged_metrics()):
        fields = log_fields(logged)
        for _, columns in training_curves(logged):
            assert set(columns) <= set(fields)
        assert "best" in fields


def test_scatter_holds_the_predictions_the_logistic_and_the_metrics(tmp_path):
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 40)
    prediction = 3 + np.tanh(mos - 3) + rng.normal(0, 0.2, 40)
    predictions = pd.DataFrame({"video_id": [str(i) for i in range(40)], "mos": mos,
                                "prediction": prediction})
    figure = figures.new_figure(*figures.SCATTER_SIZE)
    axis = figure.subplots()
    metrics = figures.draw_scatter(axis, prediction, mos, "KoNViD-1k")
    expected = vqa_metrics(prediction, mos)
    assert metrics == expected
    offsets = np.asarray(axis.collections[0].get_offsets())
    np.testing.assert_array_equal(offsets, np.stack([prediction, mos], axis=1))
    x, y = lines_of(axis)["fitted logistic"]
    order = np.argsort(prediction)
    np.testing.assert_array_equal(x, prediction[order])
    np.testing.assert_allclose(y, logistic_map(prediction, mos)[order])
    assert np.all(np.diff(y) >= -1e-9)  # a monotone curve through the points
    title = axis.get_title()
    assert title == (f"KoNViD-1k: PLCC {expected['plcc']:.3f}, SRCC {expected['srcc']:.3f}, "
                     "n = 40")

    written = figures.write_scatter(predictions, "KoNViD-1k", tmp_path / "scatter_KoNViD-1k.png")
    width, height = figures.SCATTER_SIZE
    png_image(written, (round(height * figures.DPI), round(width * figures.DPI)))


def test_scatter_of_constant_predictions_says_undefined_and_draws_a_line():
    figure = figures.new_figure(*figures.SCATTER_SIZE)
    axis = figure.subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the figure keeps the metrics' warnings to itself
        metrics = figures.draw_scatter(axis, [3.0] * 6, [1, 2, 3, 4, 5, 4.5], "flat",
                                       groups=["a", "a", "b", "b", "b", "a"])
    assert np.isnan(metrics["plcc"]) and "PLCC n/a, SRCC n/a, n = 6" in axis.get_title()
    assert "least-squares line (no logistic fit)" in lines_of(axis)
    assert [len(c.get_offsets()) for c in axis.collections] == [3, 3]  # one colour per group


def test_split_metrics_hold_each_split_and_the_median(tmp_path):
    table = pd.DataFrame({"Dataset": ["Split 1", "Split 2", "Split 3"], "PLCC": [0.8, 0.7, 0.9],
                          "SRCC": [0.75, np.nan, 0.85]})
    figure = figures.new_figure(5, 4)
    axis = figure.subplots()
    figures.draw_split_metrics(axis, table)
    lines = lines_of(axis)
    assert lines["PLCC"][0].tolist() == [1, 2, 3] and lines["PLCC"][1].tolist() == [0.8, 0.7, 0.9]
    assert lines["median PLCC 0.800"][1].tolist() == pytest.approx([0.8, 0.8])
    assert lines["median SRCC 0.800"][1].tolist() == pytest.approx([0.8, 0.8])  # pandas skips nan
    assert [t.get_text() for t in axis.get_xticklabels()] == ["Split 1", "Split 2", "Split 3"]
    png_image(figures.write_split_metrics(table, tmp_path / figures.SPLITS))


def test_a_failed_drawing_leaves_no_file(tmp_path, monkeypatch):
    figure = figures.new_figure(2, 2)
    monkeypatch.setattr(figure, "savefig", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        figures.save_png(figure, tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_drawing_leaves_pyplot_alone(tmp_path):
    code = ("import sys, pandas as pd\nfrom dagr import figures\n"
            f"figures.write_split_metrics(pd.DataFrame({{'Dataset': ['s'], 'PLCC': [0.5], "
            f"'SRCC': [0.4]}}), {str(tmp_path / 'x.png')!r})\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(figures.__file__).parents[1])
    assert (tmp_path / "x.png").is_file()
