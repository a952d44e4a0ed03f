"""Figures of the runs: training curves, prediction-against-MOS scatters, per-split metrics.

Every figure is drawn by matplotlib's Agg renderer on its own `Figure` (no display, no pyplot
and its global state), from data passed in explicitly, and written as a PNG through a
temporary name (`dagr.files.atomic_path`): a reader never sees half an image.

- `write_curves`: a trainer's `log.csv` -> `curves.png` beside it (train_lsvq.py, train_sal.py).
- `write_scatter`: one labelled set's predictions -> `scatter_<set>.png` (evaluate_vqa.py).
- `write_split_metrics`: the fine-tuning protocol's per-split table -> `splits.png`.
- `write_prediction_grid`: frames, their human maps and each model's map side by side
  (train_sal.py --ablation's `predictions.png`).
The `draw_*` functions draw into given Axes, so that demo.py can put several runs in one figure.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from metrics import logistic_map, vqa_metrics
from dagr.files import atomic_path

# ----------------------------------------------------------------------------- config
DPI = 100
PANEL_SIZE = (4.2, 3.4)       # inches (width, height) of one panel
CURVES = "curves.png"         # written beside log.csv
SCATTER_SIZE = (5.2, 4.6)
SPARSE = 500                  # videos up to which scatter points are drawn large
SPLITS = "splits.png"
SPLIT_COLUMNS = ("PLCC", "SRCC")
# -----------------------------------------------------------------------------

Panel = tuple[str, Sequence[str]]   # (title, log columns drawn in it)


# ----------------------------------------------------------------------------- canvas and file

def new_figure(width: float, height: float) -> Figure:
    """A figure (inches) drawn by the Agg renderer: no display, no global pyplot state."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `figure` to `path` as a PNG, atomically (the temporary name has no .png suffix,
    so the format is given)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def _short(column: str) -> str:
    """A log column's legend name: `val_s_auc` -> `S-AUC`, `train_loss` -> `LOSS`."""
    return column.removeprefix("val_").removeprefix("train_").replace("_", "-").upper()


def _finite(values: pd.Series) -> np.ndarray:
    """float64 values with +-inf (an undefined validation score) as nan: a gap in the line."""
    values = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


# ----------------------------------------------------------------------------- training curves

def best_epoch(log: pd.DataFrame) -> int | None:
    """The epoch the trainer kept as best.pt: the last row its `best` column marks (the
    trainer sets it in every epoch that improved its validation score); None when no row is
    marked (or, in a log written before the column existed, there is no such column)."""
    if "best" not in log:
        return None
    marked = log.loc[pd.to_numeric(log["best"], errors="coerce") == 1, "epoch"]
    return int(marked.iloc[-1]) if len(marked) else None


def draw_curves(axes: Sequence[Axes], logs: Mapping[str, pd.DataFrame],
                panels: Sequence[Panel]) -> None:
    """One panel per entry of `panels` on `axes`: each log column against the log's `epoch`,
    for every run of `logs` ({run name: log.csv rows}), and a dashed vertical line at each
    run's best epoch (`best_epoch`)."""
    several = len(logs) > 1
    for axis, (title, columns) in zip(axes, panels):
        for run, log in logs.items():
            drawn = []
            for column in columns:
                label = " ".join(([run] if several else []) +
                                 ([_short(column)] if len(columns) > 1 or not several else []))
                drawn += axis.plot(log["epoch"].to_numpy(), _finite(log[column]), marker="o",
                                   markersize=3, label=label)
            best = best_epoch(log)
            if best is not None:
                axis.axvline(best, color=drawn[0].get_color() if several else "grey",
                             linestyle="--", linewidth=1,
                             label=(f"{run}: " if several else "") + f"best epoch {best}")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.ticklabel_format(axis="y", useOffset=False)  # values as logged, not 1e-5 + 1.281
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)


def curves_figure(logs: Mapping[str, pd.DataFrame], panels: Sequence[Panel],
                  title: str = "") -> Figure:
    """`draw_curves` on a new figure: one row of up to 3 panels, else 2 columns."""
    columns = len(panels) if len(panels) <= 3 else 2
    rows = -(-len(panels) // columns)
    figure = new_figure(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows + 0.3)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    draw_curves(axes, logs, panels)
    for unused in axes[len(panels):]:
        unused.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def write_curves(log: str | Path, panels: Sequence[Panel], title: str = "",
                 path: str | Path | None = None) -> Path:
    """Redraw the training curves from the whole `log` (log.csv) into `path` (default:
    curves.png beside it); returns the path."""
    log = Path(log)
    figure = curves_figure({log.parent.name: pd.read_csv(log)}, panels, title)
    return save_png(figure, path or log.with_name(CURVES))


# ----------------------------------------------------------------------------- scatter

def _number(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}"


def scatter_title(name: str, metrics: Mapping[str, float]) -> str:
    """`<name>: PLCC 0.912, SRCC 0.893, n = 120` (undefined correlations as n/a)."""
    return (f"{name}: PLCC {_number(metrics['plcc'])}, SRCC {_number(metrics['srcc'])}, "
            f"n = {metrics['n']}")


def draw_scatter(axis: Axes, prediction: Sequence[float], mos: Sequence[float], name: str,
                 groups: Sequence[str] | None = None) -> dict[str, float]:
    """Prediction (x, MOS units) against MOS (y) of N videos, the 4-parameter logistic of
    metrics.logistic_map fitted to them (drawn through the fitted values at the sorted
    predictions; a least-squares line where the logistic cannot be fitted), the identity
    line, and vqa_metrics in the title. `groups` (N labels) colours the points by label.
    Returns the vqa_metrics."""
    x, y = np.asarray(prediction, dtype=float), np.asarray(mos, dtype=float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = vqa_metrics(x, y)
        mapped = logistic_map(x, y)
    fallback = any("least-squares line" in str(w.message) for w in caught)
    labels = np.asarray(groups if groups is not None else ["videos"] * len(x))
    dense = len(x) > SPARSE  # thousands of videos: smaller, lighter points, so density shows
    for label in dict.fromkeys(labels):
        chosen = labels == label
        axis.scatter(x[chosen], y[chosen], s=5 if dense else 18, alpha=0.3 if dense else 0.75,
                     linewidths=0, label=str(label))
    order = np.argsort(x, kind="stable")
    axis.plot(x[order], mapped[order], color="black", linewidth=1.5,
              label="least-squares line (no logistic fit)" if fallback else "fitted logistic")
    # the limits are the data's (collapsed predictions stay readable), then the identity line
    axis.autoscale_view()
    (x_low, x_high), (y_low, y_high) = axis.get_xlim(), axis.get_ylim()
    axis.set(xlim=(x_low, x_high), ylim=(y_low, y_high))
    if max(x_low, y_low) < min(x_high, y_high):  # some of it is in view
        middle = (max(x_low, y_low) + min(x_high, y_high)) / 2
        axis.axline((middle, middle), slope=1, color="grey", linewidth=1, linestyle=":",
                    label="prediction = MOS")
    axis.set_title(scatter_title(name, metrics), fontsize=10)
    axis.set_xlabel("predicted score (MOS units)")
    axis.set_ylabel("MOS")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return metrics


def write_scatter(predictions: pd.DataFrame, name: str, path: str | Path) -> Path:
    """`draw_scatter` of a predictions table (columns prediction, mos) into `path`."""
    figure = new_figure(*SCATTER_SIZE)
    draw_scatter(figure.subplots(), predictions["prediction"], predictions["mos"], name)
    return save_png(figure, path)


# ----------------------------------------------------------------------------- fine-tuning splits

def draw_split_metrics(axis: Axes, table: pd.DataFrame,
                       columns: Sequence[str] = SPLIT_COLUMNS) -> None:
    """The test metrics `columns` of each split (one row of `table` per split, named in its
    `Dataset` column) as points, and each metric's median over the splits (pandas' median,
    as in the results table's Median row) as a horizontal line."""
    splits = np.arange(1, len(table) + 1)
    for column in columns:
        values = _finite(table[column])
        points, = axis.plot(splits, values, marker="o", linestyle="none", label=column)
        median = float(table[column].median())
        axis.axhline(median, color=points.get_color(), linestyle="--", linewidth=1,
                     label=f"median {column} {_number(median)}")
    axis.set_xticks(splits, table["Dataset"].astype(str).tolist(), rotation=45, fontsize=8)
    axis.set_title(f"test metrics of {len(table)} random splits", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def write_split_metrics(table: pd.DataFrame, path: str | Path,
                        columns: Sequence[str] = SPLIT_COLUMNS) -> Path:
    """`draw_split_metrics` of the per-split rows into `path`."""
    figure = new_figure(max(4.5, 0.45 * len(table) + 2.5), 4.0)
    draw_split_metrics(figure.subplots(), table, columns)
    return save_png(figure, path)


def write_prediction_grid(frames: Sequence[np.ndarray], humans: Sequence[np.ndarray],
                          predictions: Mapping[str, Sequence[np.ndarray]], row_titles: Sequence[str],
                          path: str | Path, title: str) -> Path:
    """One row per frame: the frame (H, W, 3) uint8, the human density map (H, W), then each
    model's map (H, W), every map drawn on its own scale (its maximum white)."""
    columns = ["frame", "human", *predictions]
    height, width = frames[0].shape[:2]
    panel = 2.0
    figure = new_figure(panel * len(columns), panel * height / width * len(frames) + 0.6)
    axes = np.asarray(figure.subplots(len(frames), len(columns), squeeze=False))
    for row, (frame, human, name) in enumerate(zip(frames, humans, row_titles)):
        shown = [frame, human, *(maps[row] for maps in predictions.values())]
        for column, (axis, image) in enumerate(zip(axes[row], shown)):
            if image.ndim == 2:
                axis.imshow(image, cmap="gray", vmin=0, vmax=max(float(image.max()), 1e-12))
            else:
                axis.imshow(image)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=8)
        axes[row, 0].set_ylabel(name, fontsize=7)
    figure.suptitle(title, fontsize=9)
    return save_png(figure, path)
