"""Networks scored against labels, the same way in training and in evaluation.

Saliency (design.md, section 6): `validate` scores a network's softmax maps P on evaluation
clips (`evaluation_clips`: clips spread evenly over each video), per frame, pooled over each
video's frames, then the plain mean over videos; s-AUC takes its negatives from the fixations
of other frames of the same video. `evaluate` does it for a checkpoint on a dataset's split.

Quality (design.md, section 9): `predict` gives each video's prediction in MOS units,
`score_predictions` its logistic fit and metrics, `results_table` the paper's table, and
`write_results` / `write_predictions` the files. Under torchrun each process scores its share
and every process gets the whole result.
"""
from __future__ import annotations

import warnings
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dagr.checkpoints import checkpoint_network, unwrap
from dagr.model_file import QualityPart, Source, load_quality
from dagr.datasets import saliency_videos, set_title
from dagr.device import pick_device
from dagr.distributed import Distributed, ShardSampler, gather_objects
from dagr.failures import Failure
from dagr.files import atomic_path
from dagr.losses import probability_maps
from dagr.precision import precision_autocast, resolve_precision
from dagr.runner import Workers
from dagr.workers import quiet_worker
from dagr.frames import stored_example
from dataloader import (MosScale, SaliencyClipDataset, SaliencyVideo, VQAClipDataset,
                        to_clip_tensor)
from metrics import (QUALITY_METRICS, QUALITY_SCORE, SALIENCY_METRICS, _nanmean, logistic_map,
                     names, quality_score, saliency_metrics, titles, vqa_metrics)
from VQA import QualityNet


def result_columns() -> list[str]:
    """The columns of the paper's table: the set, every quality metric of metrics.py, n."""
    return ["Dataset", *titles(QUALITY_METRICS), "n"]


RESULT_COLUMNS = result_columns()


# ----------------------------------------------------------------------------- saliency

def evaluation_clips(videos: Sequence[SaliencyVideo], clip_len: int, size: Sequence[int],
                     clips: int) -> SaliencyClipDataset:
    """`clips` clips per video at evenly spread starts: the same every time."""
    return SaliencyClipDataset(videos, clip_len, tuple(size), clips_per_video=clips, starts="even")


# ----------------------------------------------------------------------------- validation

ClipPrediction = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]


def _clip_predictions(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                      progress: bool, precision: str) -> Iterator[ClipPrediction]:
    """(video_id, P (T, H, W), G (T, H, W), F (T, H, W)) per clip, in the loader's order;
    the network runs at `precision`, P is computed in fp32."""
    with torch.inference_mode(), precision_autocast(device, precision):
        for batch in tqdm(loader, desc="validate", unit="batch", leave=False, disable=not progress):
            maps = probability_maps(model(batch["frames"].to(device))).cpu()
            for i, video_id in enumerate(batch["video_id"]):
                yield video_id, maps[i], batch["maps"][i, 0], batch["fixations"][i, 0]


def validate(model: torch.nn.Module, data: SaliencyClipDataset, device: torch.device,
             dist: Distributed = Distributed(), batch_size: int = 4,
             workers: int = 0, progress: bool = True,
             precision: str | None = None) -> dict[str, float]:
    """Saliency metrics of `model`'s softmax maps P on the clips of `data` (an evaluation
    SaliencyClipDataset), pooled per video then averaged over videos. Under torchrun each process scores a share of
    the videos and all get the same result. The network runs at `precision` (default: the
    device's, precision.default_precision); the metrics are computed in fp32."""
    precision = resolve_precision(precision, device)
    shard = ShardSampler(len(data.videos), dist, shuffle=False).indices()
    clips = [v * data.clips_per_video + c for v in shard for c in range(data.clips_per_video)]
    loader = DataLoader(Subset(data, clips), batch_size, num_workers=workers,
                        worker_init_fn=quiet_worker)
    model.eval()
    predictions = _clip_predictions(model, loader, device, progress, precision)
    if all(len(video) == 1 for video in data.videos):
        return _image_scores(predictions, dist)
    scores = []
    for _, clips_of_video in groupby(predictions, key=lambda item: item[0]):
        pred, gt, fixations = (torch.cat(parts) for parts in zip(*(c[1:] for c in clips_of_video)))
        scores.append(saliency_metrics(pred, gt, fixations))
    scores = [s for part in gather_objects(scores, dist) for s in part]
    return {name: _nanmean([s[name] for s in scores]) for name in names(SALIENCY_METRICS)}


def _image_scores(predictions: Iterator[ClipPrediction], dist: Distributed) -> dict[str, float]:
    """The saliency metrics over still images: per image (its first clip; more clips of one
    image are the same image), averaged over the images; s-AUC's negatives are the fixations
    of other images, as the image benchmarks draw them (a video's come from its other frames).
    Every process gathers all images and scores them in id order, so that the draw of the
    negatives does not depend on how many processes there are."""
    images: dict[str, tuple[torch.Tensor, ...]] = {}
    for video_id, pred, gt, fixations in predictions:
        images.setdefault(video_id, (pred[0].clone(), gt[0].clone(), fixations[0] > 0))
    gathered = {key: item for part in gather_objects(images, dist) for key, item in part.items()}
    pred, gt, fixations = (torch.stack(parts) for parts in zip(*(gathered[key]
                                                                  for key in sorted(gathered))))
    return saliency_metrics(pred, gt, fixations)


def evaluate(checkpoint: str | Path, dataset: str, root: str | Path, split: str = "val",
             device: str | torch.device | None = None, batch_size: int | None = None,
             workers: int = 0, progress: bool = True,
             precision: str | None = None) -> dict[str, float]:
    """Metrics of a train_sal.py checkpoint on a split, with the clips its training validated
    on (frame size, clip length and clips per video from the checkpoint's settings), the
    network at `precision` (default: the device's).
    Returns {cc, nss, sim, kld, auc_j, s_auc}."""
    device = pick_device(device)
    model, payload = checkpoint_network(checkpoint, "saliency")
    model = model.to(device)
    settings = payload.get("settings") or {}
    if not {"clip_len", "size", "val_clips", "batch_size"} <= settings.keys():
        raise ValueError(f"{checkpoint}: not a train_sal.py checkpoint (no training settings)")
    data = evaluation_clips(saliency_videos(dataset, root, split, settings.get("fold", 0)),
                            settings["clip_len"],
                            settings["size"], settings["val_clips"])
    return validate(model, data, device, batch_size=batch_size or settings["batch_size"],
                    workers=workers, progress=progress, precision=precision)


def format_table(metrics: dict[str, float]) -> str:
    """A one-row Markdown table of the saliency metrics."""
    shown = names(SALIENCY_METRICS)
    header = "| " + " | ".join(shown) + " |"
    rule = "|" + "---|" * len(shown)
    row = "| " + " | ".join(f"{metrics[m]:.4f}" for m in shown) + " |"
    return "\n".join([header, rule, row])


# ----------------------------------------------------------------------------- quality

def trained_quality(source: Source, device: torch.device
                    ) -> tuple[QualityNet, MosScale, QualityPart]:
    """The trained quality network of a checkpoint or an exported model file (eval mode, on
    `device`; channels_last on CUDA), its MOS scale, and the rest of what the source holds
    (frame size, frames per clip, training record)."""
    part = load_quality(source)
    model = part.model.to(device).eval()
    if device.type == "cuda":
        model.to_channels_last()
    return model, MosScale(**part.mos_scale), part


def clip_loader(table: pd.DataFrame, frames: str | Path, saliency: str | Path | None,
                scale: MosScale, size: Sequence[int], batch_size: int, workers: int,
                dist: Distributed = Distributed(), shuffle: bool = False,
                seed: int = 0) -> DataLoader:
    """Batches of this rank's share of `table`: `frames` (B, T, 3, H, W), `saliency`
    (B, T, 1, H, W), `target` (B,), `mos` (B,), `video_id` (list). saliency None = zeros."""
    data = VQAClipDataset(table, frames, saliency, scale, tuple(size))
    sampler = ShardSampler(len(data), dist, shuffle=shuffle, seed=seed)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=quiet_worker)


def saliency_folder(model: QualityNet, saliency: str | Path | None) -> Path | None:
    """The maps folder the model needs: None when its saliency weighting is off."""
    if model.saliency_alpha == 0:
        return None
    if not saliency:
        raise ValueError(f"the model weights frames by saliency (alpha {model.saliency_alpha}): "
                         "give --saliency DIR, or train with --saliency-alpha 0")
    return Path(saliency)


# ----------------------------------------------------------------------------- prediction and scores

def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            progress: bool = True, precision: str | None = None) -> pd.DataFrame:
    """`video_id, mos, prediction` (MOS units, by the loader's dataset scale) for the
    videos of `loader` (this rank's shard under DDP; gather with `gather_predictions`), the
    network at `precision` (default: the device's), the predictions taken in fp32."""
    return predict_batches(model, loader, loader.dataset.scale, device, progress, precision)


@torch.inference_mode()
def predict_batches(model: torch.nn.Module, batches: Iterable[dict], scale: MosScale,
                    device: torch.device, progress: bool = True, precision: str | None = None
                    ) -> pd.DataFrame:
    """`predict` of batches (`frames`, `saliency`, `mos`, `video_id`) from anywhere: a
    DataLoader's, or `stored_batches`'."""
    model = unwrap(model).eval()
    precision = resolve_precision(precision, device)
    rows = []
    for batch in tqdm(batches, desc="predict", unit="batch", leave=False, disable=not progress):
        with precision_autocast(device, precision):
            pred = model(batch["frames"].to(device, non_blocking=True),
                         batch["saliency"].to(device, non_blocking=True))
        rows += zip(batch["video_id"], batch["mos"].tolist(),
                    scale.to_mos(pred.float().cpu().numpy()).tolist())
    return pd.DataFrame(rows, columns=["video_id", "mos", "prediction"])


def stored_batches(data: VQAClipDataset, batch_size: int, workers: Workers
                   ) -> Iterator[dict | tuple[str, Failure]]:
    """Batches of `data`'s videos as its DataLoader gives them (`frames`, `saliency`, `mos`,
    `video_id`), in order, their stored frames and maps read by the run's supervised worker
    processes; a video that cannot be read, or that takes its worker down, comes as
    (video_id, Failure) instead and is left out of the batches."""
    rows = list(zip(data.table["video_id"], data.table["mos"].astype(float)))
    load = partial(stored_example, frames=data.frames_dir, saliency=data.saliency_dir,
                   size=data.size)
    batch: list[dict] = []
    for (video_id, _), example in workers.map(load, rows, ordered=True,
                                              name=lambda row: str(data.frames_dir / row[0])):
        if isinstance(example, Failure):
            yield video_id, example
            continue
        batch.append(example)
        if len(batch) == batch_size:
            yield _collate(batch, data.size)
            batch = []
    if batch:
        yield _collate(batch, data.size)


def _collate(examples: list[dict], size: tuple[int, int]) -> dict:
    frames = torch.stack([to_clip_tensor(e["frames"]) for e in examples])
    if examples[0]["maps"] is None:
        saliency = torch.zeros(*frames.shape[:2], 1, *size)
    else:
        saliency = torch.stack([torch.from_numpy(e["maps"]) for e in examples])[:, :, None]
        saliency = saliency.float().div_(255)
    return {"frames": frames, "saliency": saliency,
            "mos": torch.tensor([e["mos"] for e in examples], dtype=torch.float64),
            "video_id": [e["video_id"] for e in examples]}


def gather_predictions(frame: pd.DataFrame, dist: Distributed) -> pd.DataFrame:
    """Every rank's predictions, on every rank."""
    return pd.concat(gather_objects(frame, dist), ignore_index=True)


def score_predictions(predictions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Adds `mapped` (the logistic fit of prediction to MOS) and returns vqa_metrics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vqa_metrics warns about the same fit just below
        mapped = logistic_map(predictions["prediction"], predictions["mos"])
    return predictions.assign(mapped=mapped), vqa_metrics(predictions["prediction"], predictions["mos"])


def quality_validation(predictions: pd.DataFrame) -> dict[str, float]:
    """vqa_metrics of validation predictions and metrics.QUALITY_SCORE (`quality_score`),
    which picks the best epoch (nan when undefined)."""
    _, metrics = score_predictions(predictions)
    return {**metrics, QUALITY_SCORE.name: quality_score(metrics)}


def results_table(metrics: dict[str, dict[str, float]], average: bool = True) -> pd.DataFrame:
    """The paper's table, one row per set: Dataset, each quality metric of metrics.py (PLCC,
    SRCC, KRCC, RMSE, PLCC (logistic)), n; with `average` and several sets, an `Average` row
    of the metrics that average (not RMSE, which is in each dataset's own units; an undefined
    value makes its average undefined)."""
    rows = [{"Dataset": name, **{q.title: m[q.name] for q in QUALITY_METRICS}, "n": m["n"]}
            for name, m in metrics.items()]
    table = pd.DataFrame(rows, columns=result_columns())
    if average and len(rows) > 1:
        averaged = titles(q for q in QUALITY_METRICS if q.averaged)
        # skipna=False: an average that silently left out an undefined set would mislead
        table.loc[len(table)] = {"Dataset": "Average", **table[averaged].mean(skipna=False).to_dict(),
                                 **dict.fromkeys(titles(q for q in QUALITY_METRICS
                                                        if not q.averaged), float("nan")),
                                 "n": int(table["n"].sum())}
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """A markdown table; floats with 3 decimals, undefined values as `n/a`."""
    def cell(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return "n/a" if np.isnan(value) else f"{value:.3f}"
        return str(value)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_results(table: pd.DataFrame, out: str | Path, stem: str = "results") -> Path:
    """`<stem>.md`, `<stem>.csv` and `<stem>.json` (undefined values as null) in `out`;
    prints the markdown. Returns the markdown file."""
    out = Path(out)
    markdown = markdown_table(table)
    for suffix, text in ((".md", markdown), (".csv", table.to_csv(index=False)),
                         (".json", table.to_json(orient="records", indent=1))):
        with atomic_path(out / f"{stem}{suffix}") as tmp:
            tmp.write_text(text)
    print(markdown)
    return out / f"{stem}.md"


def write_predictions(predictions: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        predictions.to_csv(tmp, index=False, float_format="%.6g")


def evaluate_best(model: torch.nn.Module, loaders: dict[str, DataLoader], dataset: str,
                  out: Path, device: torch.device, dist: Distributed,
                  precision: str | None = None) -> None:
    """Predictions of every test set and the results table (rank 0 writes them)."""
    metrics = {}
    for split, test_loader in loaders.items():
        if len(test_loader.dataset) == 0:
            continue
        scored, metrics[set_title(dataset, split)] = score_predictions(
            gather_predictions(predict(model, test_loader, device, dist.is_main, precision),
                               dist))
        if dist.is_main:
            write_predictions(scored, out / f"predictions_{split}.csv")
    if metrics and dist.is_main:
        write_results(results_table(metrics), out)
