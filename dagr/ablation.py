"""The register ablation (docs/registers.md): the saliency network retrained with and without
registers, over seeds, on one dataset (`train_sal.py --ablation`).

Each variant changes only the register options of a train_sal.py run; everything else (width,
size, epochs, data, learning rate) is the run's. Variant v with seed s trains in
`<out>/<v>/seed_<s>/` as an ordinary run, so the ablation resumes where it stopped: finished
runs are kept, a stopped one continues from its last.pt. The summary reads each run's best
checkpoint (the epoch of highest validation CC) and its log.
"""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dagr import figures
from dagr.checkpoints import load_checkpoint
from dagr.evaluation import markdown_table
from dagr.files import atomic_path
from dagr.provenance import TRAINED_ON
from dagr.registers import FAR_CONTEXT_MEASURES
from dagr.training import BEST, LAST, LOG
from metrics import SALIENCY_METRICS, UNIT_SCALE, Metric, names

TABLE, FIGURE = "ablation", "ablation.png"
CURVE = "learning_curve"  # --learning-curve's table (.md, .csv) and figure (.png)
RUN_COLUMNS = ("variant", "seed", "fold", "best_epoch", "minutes", "training")  # the rest: metrics
PRIOR = "centre prior"  # the reference row the networks' gains are measured from
LAST_EPOCHS = 3
# the trend beside the best epoch's luck: designs are compared on it (docs/registers.md)
CC_LAST = Metric("cc_last", f"CC, last {LAST_EPOCHS} epochs", UNIT_SCALE)


@dataclass(frozen=True)
class Variant:
    """A saliency network of the ablation: its name in tables and the register options that
    make it (train_sal.py's option names, without the dashes)."""
    name: str
    options: dict[str, Any]

    @property
    def folder(self) -> str:
        return self.name.replace(" N=", "_n").replace(" ", "_").replace("-", "_").lower()


def variants(registers: int) -> dict[str, Variant]:
    """The variants by their folder (and --ablation) names: the baseline (no registers);
    input-mode registers; attention registers with the design's per-position write-back
    (mix), with `registers`, 1 and 8 tokens; and the earlier designs: reading enc1's features
    in place of the clip's colours (so no colour contrast), and, reading the bottleneck only,
    FiLM gains and token-by-token write-back (docs/registers.md)."""
    attention = {"register_mode": "attention", "register_write": "mix"}
    earlier = {"register_mode": "attention", "read_levels": ["bottleneck"]}
    found = [Variant("baseline", {"registers": 0}),
             Variant("input", {"registers": registers, "register_mode": "input"}),
             Variant("attention", {"registers": registers, **attention}),
             Variant("attention enc1-read", {"registers": registers, **attention,
                                             "read_levels": ["enc1", "bottleneck"]}),
             Variant("attention FiLM", {"registers": registers, **earlier,
                                        "register_write": "film"}),
             Variant("attention token-write", {"registers": registers, **earlier,
                                               "register_write": "token"})]
    found += [Variant(f"attention N={n}", {"registers": n, **attention})
              for n in (1, 8) if n != registers]
    return {variant.folder: variant for variant in found}


def run_folder(out: Path, variant: Variant, seed: int) -> Path:
    return out / variant.folder / f"seed_{seed}"


def curve_folder(out: Path, limit: int) -> Path:
    """Where --learning-curve trains its runs on `limit` training videos or images."""
    return out / f"train_{limit}"


def run_name(checkpoint: Path) -> str:
    """The name of the run that wrote `checkpoint` (`<variant>/seed_<s>`, its folder under the
    ablation's), which figure titles show in place of a path of the machine it ran on."""
    return f"{checkpoint.parent.parent.name}/{checkpoint.parent.name}"


def finished(folder: Path, epochs: int) -> bool:
    """Whether the run in `folder` has trained all `epochs` (its last checkpoint says so)."""
    if not (folder / LAST).is_file() or not (folder / BEST).is_file():
        return False
    return int(load_checkpoint(folder / LAST).get("epoch", 0)) >= epochs


def collect(out: Path, chosen: Sequence[Variant], seeds: Sequence[int], epochs: int
            ) -> pd.DataFrame:
    """One row per run that has trained all `epochs` (a stopped one is left out): variant,
    seed, the validation metrics of its best epoch, the mean validation CC of its last
    LAST_EPOCHS epochs, that best epoch, the run's minutes (the sum of its log's epoch times)
    and how many videos or images it trained on."""
    rows = []
    for variant in chosen:
        for seed in seeds:
            folder = run_folder(out, variant, seed)
            if not finished(folder, epochs):
                continue
            best = load_checkpoint(folder / BEST)
            log = pd.read_csv(folder / LOG)
            rows.append({"variant": variant.name, "seed": seed,
                         **{m: float(best["metrics"][m]) for m in names(SALIENCY_METRICS)},
                         CC_LAST.name: float(log["val_cc"].tail(LAST_EPOCHS).mean()),
                         "best_epoch": int(best["epoch"]),
                         "minutes": float(log["seconds"].sum()) / 60,
                         "training": int(best.get(TRAINED_ON, {}).get("videos", 0))})
    return pd.DataFrame(rows, columns=["variant", "seed", *names(SALIENCY_METRICS),
                                       CC_LAST.name, "best_epoch", "minutes", "training"])


def measure(column: str) -> Metric:
    """The Metric of a column of the runs: a saliency metric of metrics.py or a far-context
    measure of dagr/registers.py (any other column as itself, higher is better)."""
    known = {metric.name: metric
             for metric in (*SALIENCY_METRICS, CC_LAST, *FAR_CONTEXT_MEASURES)}
    return known.get(column, Metric(column, column))


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The metrics of `runs`: the saliency metrics, then any others that were added (such as
    the far-context test's, dagr/registers.py)."""
    return [column for column in runs.columns if column not in RUN_COLUMNS]


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant (in the order of `runs`): seeds, then each metric's mean and standard
    deviation over the seeds (ddof 1; nan for one seed), then minutes per run."""
    rows = []
    for name, group in runs.groupby("variant", sort=False):
        row: dict[str, Any] = {"variant": name, "runs": len(group),
                               "seeds": max(1, group["seed"].nunique()),
                               "folds": group["fold"].nunique() if "fold" in group else 1}
        for metric in metric_columns(runs):
            row[f"{metric}_mean"] = float(group[metric].mean())
            row[f"{metric}_std"] = float(group[metric].std(ddof=1)) if len(group) > 1 else math.nan
        row["minutes_per_run"] = float(group["minutes"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """`summary` as people read it: each metric as `mean ± std`, with the change in CC from
    the baseline and in CC and NSS from the centre prior when the table has them."""
    shown = pd.DataFrame({"Saliency network": table["variant"]})
    if (table["folds"] > 1).any():
        shown["Folds × seeds"] = [f"{folds} × {seeds}"
                                  for folds, seeds in zip(table["folds"], table["seeds"])]
    else:
        shown["Seeds"] = table["seeds"]
    for metric in (column[:-len("_mean")] for column in table if column.endswith("_mean")):
        shown[measure(metric).title] = [
            _mean_std(m, s) for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"])]
    for reference, metrics in (("baseline", ("cc",)), (PRIOR, ("cc", "nss"))):
        if (table["variant"] == reference).any():
            for metric in metrics:
                base = float(table.loc[table["variant"] == reference, f"{metric}_mean"].iloc[0])
                shown[f"{measure(metric).title} - {reference}"] = [
                    f"{m - base:+.3f}" for m in table[f"{metric}_mean"]]
    shown["Minutes per run"] = ["–" if math.isnan(m) else f"{m:.1f}"
                                for m in table["minutes_per_run"]]
    return shown


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):  # a measure that does not apply, such as the centre prior's epochs
        return "–"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def write_results(runs: pd.DataFrame, out: Path, about: str) -> Path:
    """`ablation.md` (`about`, then the table), `ablation.csv` (every run) and `ablation.json`
    (the summary), and the figure `ablation.png`, all in `out`. Returns the markdown file."""
    table = summary(runs)
    markdown = f"{about}\n\n{markdown_table(display_table(table))}"
    for name, text in ((f"{TABLE}.md", markdown), (f"{TABLE}.csv", runs.to_csv(index=False)),
                       (f"{TABLE}.json", json_records(table))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    write_figure(runs, out / FIGURE, about)
    return out / f"{TABLE}.md"


def json_records(table: pd.DataFrame) -> str:
    """`table` as a JSON list of rows; an undefined value (a standard deviation over one
    seed) is null, since JSON has no NaN."""
    rows = [{key: None if isinstance(value, float) and math.isnan(value) else value
             for key, value in row.items()} for row in table.to_dict(orient="records")]
    return json.dumps(rows, indent=1, allow_nan=False)


def write_figure(runs: pd.DataFrame, path: Path, title: str) -> Path:
    """One panel per metric: each variant's mean over seeds as a bar, the standard deviation
    as an error bar, and every seed as a dot."""
    names = list(dict.fromkeys(runs["variant"]))
    metrics = metric_columns(runs)
    figure = figures.new_figure(2.6 * len(metrics), 3.4)
    for axis, metric in zip(figure.subplots(1, len(metrics)), metrics):
        for x, name in enumerate(names):
            values = runs.loc[runs["variant"] == name, metric].to_numpy(dtype=float)
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            axis.bar(x, values.mean(), yerr=spread, capsize=3, alpha=0.6, label=name)
            axis.plot(np.full(len(values), x), values, "k.", markersize=4)
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        better = "lower" if measure(metric).lower_is_better else "higher"
        axis.set_title(f"{measure(metric).title} ({better} is better)", fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    # about 14 characters of 9-point text per inch of figure
    figure.suptitle(textwrap.fill(title, int(14 * figure.get_figwidth())), fontsize=9)
    return figures.save_png(figure, path)


CURVE_METRICS = ("cc", "nss", CC_LAST.name)  # the learning curve's columns


def write_curve(runs: pd.DataFrame, references: pd.DataFrame, out: Path, about: str) -> Path:
    """learning_curve.md (`about`, then per variant and number of training videos each
    metric's mean ± std over the seeds), learning_curve.csv (every run) and learning_curve.png
    (the means against the number of training videos, every seed a dot, the centre prior as a
    line). Returns the markdown file."""
    rows = []
    for (name, training), group in runs.groupby(["variant", "training"], sort=False):
        row = {"Saliency network": name, "Training videos or images": int(training),
               "Seeds": len(group)}
        for metric in CURVE_METRICS:
            spread = float(group[metric].std(ddof=1)) if len(group) > 1 else math.nan
            row[measure(metric).title] = _mean_std(float(group[metric].mean()), spread)
        rows.append(row)
    for reference in references.itertuples():
        rows.append({"Saliency network": reference.variant,
                     "Training videos or images": int(reference.training), "Seeds": 1,
                     **{measure(m).title: _mean_std(float(getattr(reference, m, math.nan)), math.nan)
                        for m in CURVE_METRICS}})
    markdown = f"{about}\n\n{markdown_table(pd.DataFrame(rows))}"
    for name, text in ((f"{CURVE}.md", markdown), (f"{CURVE}.csv", runs.to_csv(index=False))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    write_curve_figure(runs, references, out / f"{CURVE}.png", about)
    return out / f"{CURVE}.md"


def write_curve_figure(runs: pd.DataFrame, references: pd.DataFrame, path: Path,
                       title: str) -> Path:
    """CC and NSS against the number of training videos (log scale): a line of means per
    variant, a dot per run, the centre prior as a dashed line (the table lists the others)."""
    figure = figures.new_figure(9, 3.6)
    for axis, metric in zip(figure.subplots(1, 2), CURVE_METRICS[:2]):
        for name, group in runs.groupby("variant", sort=False):
            means = group.groupby("training")[metric].mean()
            line, = axis.plot(means.index, means.to_numpy(), "o-", label=name)
            axis.plot(group["training"], group[metric], ".", color=line.get_color(), alpha=0.5)
        for reference in references[references["variant"] == PRIOR].itertuples():
            axis.axhline(getattr(reference, metric), linestyle="--", color="gray")
            axis.annotate(reference.variant, (0.01, getattr(reference, metric)), fontsize=7,
                          xycoords=("axes fraction", "data"), va="bottom")
        axis.set_xscale("log")
        sizes = sorted(runs["training"].unique())
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.minorticks_off()
        axis.set_xlabel("training videos or images")
        axis.set_title(f"validation {measure(metric).title}", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(textwrap.fill(title, int(14 * figure.get_figwidth())), fontsize=9)
    return figures.save_png(figure, path)
