"""The fast scoring path's building blocks: K sampled frames decoded per video by worker
processes (SampledVideos, decoded_videos), the quality network made ready for inference
(BatchNorm folded, channels_last, precision, compile) and batched scoring with saliency computed
in memory. evaluate_vqa.score_videos runs them over video files; benchmark.py measures them.

Imports the decoding, precision and network files; no stage script.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import torch
from torch.fx.experimental.optimization import fuse as fuse_conv_batchnorm
from torch.utils.data import DataLoader, Dataset

from precision import compile_model, precision_autocast, resolve_precision
from runtime import quiet_worker
from sal_withreg import predict_maps, to_precision, weights_precision
from video_io import NUM_FRAMES, VideoError, sample_video
from VQA import QualityNet


class SampledVideos(Dataset):
    """K frames sampled from each video file. Item: `video` (path string), `frames` uint8
    (T, H, W, 3) RGB tensor or None when the video cannot be read, `problem` (why) and `kind`
    (video_io's failure kind; "" when read), `decoded` (frames that decode in the file; 0 when
    it cannot be read)."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int], k: int = NUM_FRAMES):
        self.paths, self.size, self.k = list(paths), tuple(size), k

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            sampled = sample_video(path, self.k, self.size)
        except (VideoError, OSError, cv2.error) as err:
            return {"video": str(path), "frames": None, "problem": str(err),
                    "kind": getattr(err, "kind", "error"), "decoded": 0}
        return {"video": str(path), "frames": torch.from_numpy(sampled.frames), "problem": "",
                "kind": "", "decoded": sampled.decoded}


def single_threaded_opencv(_: int) -> None:
    """Worker set-up: one OpenCV thread per decoding process (the processes are the
    parallelism); Ctrl-C is left to the main process (runtime.quiet_worker)."""
    cv2.setNumThreads(1)
    quiet_worker()


def decoded_videos(paths: Sequence[Path], size: tuple[int, int], workers: int,
                   k: int = NUM_FRAMES, persistent: bool = False) -> DataLoader:
    """SampledVideos' items of `paths`, in order, decoded by `workers` processes (0: by this
    one). The processes keep decoding (two videos ahead each) while the caller runs the models;
    one video per item, not one batch, keeps all of them busy however few videos there are.
    `persistent` keeps the processes from one pass over the items to the next."""
    return DataLoader(SampledVideos(paths, size, k), batch_size=None, num_workers=workers,
                      worker_init_fn=single_threaded_opencv,
                      persistent_workers=persistent and workers > 0,
                      # spawn, not fork: forking a process holding torch/OpenCV threads can hang
                      multiprocessing_context="spawn" if workers > 0 else None)


def inference_quality(model: QualityNet, device: torch.device, precision: str | None = None,
                      compiled: bool = False) -> QualityNet:
    """`model` (changed in place) ready for `score_clips` on `device`: eval mode; the trunk's
    BatchNorm folded into its convolutions (torch.fx graph fusion) and the trunk in
    channels_last (faster on GPUs with bf16, and for fp32 on the CPU: 1.4x, measured); weights
    at `precision` (default: bf16 on CUDA, fp32 on the CPU; see sal_withreg.to_precision); the
    trunk `torch.compile`d when `compiled`."""
    model = model.to(device).eval()
    model.trunk = fuse_conv_batchnorm(model.trunk)
    model.to_channels_last()
    to_precision(model, resolve_precision(precision, device))
    model.trunk = compile_model(model.trunk, compiled)
    return model


@torch.inference_mode()
def score_clips(model: QualityNet, saliency_model: torch.nn.Module | None, frames: torch.Tensor,
                device: torch.device) -> torch.Tensor:
    """frames uint8 (B, T, H, W, 3) -> scores (B,) on the training targets' unit scale, at the
    precision of the models' weights (`inference_quality`, sal_withreg.prepare_inference).
    Frames travel to the device as uint8 (a quarter of the float bytes); the saliency maps are
    quantised to 8 bits like the stored maps the model was trained on, and stay on the device."""
    clips = frames.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).float().div_(255)
    maps = None
    if saliency_model is not None:
        maps = predict_maps(saliency_model, clips, device, on_device=True)[:, :, None].float().div_(255)
    with precision_autocast(device, weights_precision(model)):
        return model(clips, maps).float()


def score_items(model: QualityNet, saliency_model: torch.nn.Module | None,
                items: Iterable[dict], batch_size: int, device: torch.device) -> Iterator[dict]:
    """Each of `items` (SampledVideos') back, without its frames, with a `score` on the unit
    scale, or None for a video that could not be read. The readable videos are scored in
    batches of `batch_size` (the last one smaller), so an unreadable one comes back first."""
    pending: list[dict] = []
    for item in items:
        if item["frames"] is None:
            yield {**_without_frames(item), "score": None}
            continue
        pending.append(item)
        if len(pending) == batch_size:
            yield from _score_batch(model, saliency_model, pending, device)
            pending = []
    if pending:
        yield from _score_batch(model, saliency_model, pending, device)


def _score_batch(model: QualityNet, saliency_model: torch.nn.Module | None, items: list[dict],
                 device: torch.device) -> list[dict]:
    frames = torch.stack([item["frames"] for item in items])  # (B, T, H, W, 3)
    if device.type == "cuda":
        frames = frames.pin_memory()  # page-locked: the copy to the GPU runs without staging
    scores = score_clips(model, saliency_model, frames, device).cpu().tolist()
    return [{**_without_frames(item), "score": score} for item, score in zip(items, scores)]


def _without_frames(item: dict) -> dict:
    return {key: value for key, value in item.items() if key != "frames"}
