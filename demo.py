"""The whole pipeline on built-in demo data, one command (docs/demo.md).

    python demo.py                             # the demo (docs/demo.md: its time on 2 cores)
    python demo.py --size tiny --out /tmp/d    # the smallest end-to-end run (seconds)
    python demo.py --data-only --out DIR       # only the synthetic datasets, into DIR/data

Nothing is downloaded. dagr/global_context.py writes the global-context check, an
odd-one-out saliency set in DHF1K's layout where only a comparison across the frame finds the
salient disk, and dagr/demo_data.py a KoNViD-1k-layout quality set of the check's scenes, where
a defect on the odd disk costs five times one on a look-alike (its docstring states the MOS
formula). Then the stage scripts run with their own command-line options, as a user would:

1. extract_frame.py samples the quality clips' frames;
2. train_sal.py --ablation trains the saliency network twice on the check, with attention
   registers and without (the UNet3D baseline), and tests whether each compares the disks
   (docs/registers.md);
3. inference_sal.py writes both networks' maps for the quality clips;
4. train_lsvq.py trains the quality network three times on the same split and seed: saliency
   weighting a = 0.5 with the register network's maps (the demo model), a = 0.5 with the
   baseline's maps, and a = 0 (saliency off);
5. evaluate_vqa.py scores each on the held-out test split.

Every size and setting of a run is in its preset (dagr/demo_plan.py, SIZES), small enough for
2 CPU cores: 24 x 384 strips, one frame per quality clip, a U-Net of width 8, ResNet-18
trained from scratch (no ImageNet download). The tables and figures are drawn from the
stages' outputs by dagr/demo_report.py.

It prints the demo model's results table (the paper's form), the ablation tables and where
everything is. Written to --out: `results.md` and `ablation.md` (each also .csv and .json),
`overlays.png`, `scatter.png`, `training_curves.png`, `register_attention.png` (matplotlib's
Agg renderer, no display needed), and the stages' own folders `data/`, `frames/`,
`registers/` (the saliency networks' runs, the register ablation's table, figure and register
states), `maps/`, `quality/`, `eval/`. Checkpoints are kept without optimizer state (the
trainers' --slim-checkpoints), and of the quality runs only the demo model's
(`quality/saliency_registers/best.pt`, the one to score videos with) is kept once all three
are evaluated. A folder that an earlier demo run wrote is cleared first; any other non-empty
folder is refused.
"""
from __future__ import annotations

if __name__ == "__main__":  # first: a Ctrl-C while the modules below load ends in one line
    from dagr.cli import quiet_start
    quiet_start()

import argparse
import functools
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Iterator, Sequence

import pandas as pd

import evaluate_vqa
import extract_frame
import inference_sal
import train_lsvq
import train_sal
from dagr import demo_data, global_context
from dagr.cli import deprecated_alias, run_script, script_parser
from dagr.demo_plan import (ALPHA, DEMO_MODEL, QUALITY_LAYOUT,
                            QUALITY_RUNS, SALIENCY_LAYOUT, SALIENCY_NAMES, SALIENCY_RUNS, SIZES,
                            STAGE_FOLDERS, DemoSize, Layout)
from dagr.demo_report import write_report
from dagr.device import add_device_argument
from dagr.training import BEST

# ----------------------------------------------------------------------------- config
OUT = "demo_out"
SIZE = "small"            # small: the demo; tiny: the smallest end-to-end run (tests)
SEED = 0
WORKERS = 2               # frame-extraction processes
# -----------------------------------------------------------------------------

MARKER = "demo_settings.json"   # marks a folder as a demo run's, so that a re-run may clear it
OPTION_TYPES = {"int": int, "float": float, "str": str}  # DemoSize fields that are options
RENAMED = {"check_width": "--check-channels"}  # old names


# ----------------------------------------------------------------------------- progress

class Stages:
    """Prints a numbered line before each stage and its wall time after it."""

    def __init__(self, total: int):
        self.total, self.done, self.began = total, 0, time.perf_counter()

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}", flush=True)
        began = time.perf_counter()
        yield
        now = time.perf_counter()
        print(f"[{self.done}/{self.total}] done in {now - began:.0f} s "
              f"({now - self.began:.0f} s since the start)", flush=True)


def run_stage(script: ModuleType, argv: Sequence[object]) -> None:
    """The stage script's main() on the command line `argv`, as a user would run it; any exit
    status but 0 stops the demo."""
    code = script.main([str(arg) for arg in argv])
    if code != 0:
        name = Path(script.__file__).name
        raise RuntimeError(f"{name} failed (exit status {code}); its messages are above")


# ----------------------------------------------------------------------------- command lines

def extract_argv(layout: Layout, size: DemoSize, workers: int) -> list:
    """extract_frame.py: as many frames of each quality clip as the saliency networks' clips
    hold."""
    return ["--dataset", QUALITY_LAYOUT, "--labels", layout.labels,
            "--root", layout.quality_set / demo_data.QUALITY_VIDEOS, "--out", layout.frames,
            "--num-frames", size.check_clip_len, "--size", *size.check_size, "--workers", workers]


def trainer_options(size: DemoSize, seed: int, device: str) -> list:
    """What both trainers' runs share: loading, seed, device, and checkpoints kept without the
    optimizer state (nothing resumes a demo run)."""
    return ["--workers", size.loader_workers, "--seed", seed, "--device", device,
            "--slim-checkpoints"]


def maps_argv(layout: Layout, size: DemoSize, name: str, device: str) -> list:
    """inference_sal.py: saliency run `name`'s maps of the stored frames."""
    return ["--checkpoint", layout.saliency_run(name) / BEST, "--frames", layout.frames,
            "--out", layout.maps(name), "--workers", size.loader_workers,
            "--device", device]


def maps_option(layout: Layout, name: str) -> list:
    """`--saliency` with the maps that quality run `name` reads; none for saliency off."""
    maps = QUALITY_RUNS[name][0]
    return ["--saliency", layout.maps(maps)] if maps else []


def quality_argv(layout: Layout, size: DemoSize, name: str, seed: int, device: str) -> list:
    """train_lsvq.py on the quality set, reading the maps and weighting of QUALITY_RUNS[name]."""
    return ["--dataset", QUALITY_LAYOUT, "--labels", layout.labels, "--frames", layout.frames,
            *maps_option(layout, name), "--saliency-alpha", QUALITY_RUNS[name][1],
            "--out", layout.quality_run(name), "--backbone", size.backbone, "--no-pretrained",
            "--size", *size.check_size, "--epochs", size.quality_epochs,
            "--batch-size", size.quality_batch, "--lr", size.quality_lr,
            "--warmup", size.quality_warmup, "--val-fraction", size.val_fraction,
            "--test-fraction", size.test_fraction, *trainer_options(size, seed, device)]


def evaluation_argv(layout: Layout, size: DemoSize, name: str, device: str) -> list:
    """evaluate_vqa.py: quality run `name` on the test split."""
    return ["--checkpoint", layout.quality_run(name) / BEST, "--dataset", QUALITY_LAYOUT,
            "--labels", layout.test_labels, "--frames", layout.frames, *maps_option(layout, name),
            "--out", layout.evaluation(name), "--workers", size.loader_workers, "--device", device]


def ablation_argv(layout: Layout, size: DemoSize, seed: int, device: str) -> list:
    """train_sal.py --ablation on the global-context check: the saliency networks, the
    baseline and attention registers, with the demo's seed."""
    return ["--ablation", *SALIENCY_RUNS.values(), "--seeds", seed, "--dataset", SALIENCY_LAYOUT,
            "--root", layout.check_set, "--out", layout.registers,
            "--saliency-width", size.check_width, "--size", *size.check_size,
            "--epochs", size.check_epochs, "--clip-len", size.check_clip_len,
            "--clips-per-video", size.check_clips, "--val-clips", size.check_val_clips,
            "--batch-size", size.check_batch, "--lr", size.check_lr,
            "--warmup", size.check_warmup, "--workers", size.loader_workers, "--device", device]


# ----------------------------------------------------------------------------- files between stages

def prepare_folder(out: Path) -> None:
    """Make `out` ready: clear the stage folders of an earlier demo run there; refuse a
    non-empty folder that is not a demo run's."""
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"{out} is not empty and holds no earlier demo run; "
                              "give an empty or new folder with --out")
    for name in STAGE_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def write_data(layout: Layout, size: DemoSize, seed: int) -> None:
    """dagr/global_context.py's check, and dagr/demo_data.py's quality set of the check's
    scenes."""
    options = global_context.variant_options(size.check_variant)
    global_context.write_global_context_set(layout.check_set, size.check_train, size.check_val,
                                            size=size.check_size, seed=seed, **options)
    scene = functools.partial(global_context.odd_one_out_scene, **options)
    demo_data.write_quality_set(layout.quality_set, size.quality_clips, size.clip_frames,
                                size.check_size, seed, demo_data.DECOY_KINDS, demo_data.DECOY_TURNS,
                                scene=scene, weights=demo_data.DECOY_WEIGHT,
                                reach=demo_data.DECOY_REACH)
    print(f"global-context check: {size.check_train} training + {size.check_val} validation "
          f"videos in {layout.check_set}\nquality set: {size.quality_clips} clips "
          f"({' or '.join(demo_data.DECOY_KINDS)}) in {layout.quality_set}")


def write_test_labels(layout: Layout) -> Path:
    """The test split that train_lsvq.py held out (the videos of its test predictions; every
    run shares it), as a KoNViD-1k label file for evaluate_vqa.py."""
    tested = pd.read_csv(layout.quality_run(DEMO_MODEL) / "predictions_test.csv",
                         dtype={"video_id": str})["video_id"]
    labels = pd.read_csv(layout.labels, dtype={"flickr_id": str})
    layout.test_labels.parent.mkdir(parents=True, exist_ok=True)
    labels[labels["flickr_id"].isin(tested)].to_csv(layout.test_labels, index=False)
    return layout.test_labels


def drop_ablation_checkpoints(layout: Layout) -> None:
    """Remove the checkpoints of the quality runs other than the demo model once they are
    evaluated (about 80 MB each): their logs and predictions stay, and the demo model's
    checkpoint is the one to score videos with."""
    for name in QUALITY_RUNS:
        if name != DEMO_MODEL:
            (layout.quality_run(name) / BEST).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the demo

def run_demo(out: str | Path, preset: DemoSize = SIZES[SIZE], seed: int = SEED, device: str = "cpu",
             workers: int = WORKERS) -> dict[str, Path]:
    """Run the whole demo into `out`; returns the files to look at, by name."""
    layout = Layout(Path(out), seed)
    prepare_folder(layout.out)
    (layout.out / MARKER).write_text(json.dumps({"seed": seed, **asdict(preset)}))
    stages = Stages(5 + len(SALIENCY_RUNS) + len(QUALITY_RUNS))
    with stages.stage("demo data (global_context.py, demo_data.py)"):
        write_data(layout, preset, seed)
    with stages.stage("frames of the quality clips (extract_frame.py)"):
        run_stage(extract_frame, extract_argv(layout, preset, workers))
    with stages.stage("saliency networks on the global-context check: the baseline and "
                      "attention registers (train_sal.py --ablation)"):
        run_stage(train_sal, ablation_argv(layout, preset, seed, device))
    for name in SALIENCY_RUNS:
        with stages.stage(f"saliency maps of the quality clips: {SALIENCY_NAMES[name]} "
                          "(inference_sal.py)"):
            run_stage(inference_sal, maps_argv(layout, preset, name, device))
    for name, (maps, alpha) in QUALITY_RUNS.items():
        with stages.stage(f"quality network, a = {alpha:g}, maps: {SALIENCY_NAMES[maps]} "
                          "(train_lsvq.py)"):
            run_stage(train_lsvq, quality_argv(layout, preset, name, seed, device))
    with stages.stage("the test split (evaluate_vqa.py)"):
        write_test_labels(layout)
        for name in QUALITY_RUNS:
            run_stage(evaluate_vqa, evaluation_argv(layout, preset, name, device))
        drop_ablation_checkpoints(layout)
    with stages.stage("tables and figures (dagr/demo_report.py)"):
        files = write_report(layout, preset)
    return files | {"register states": layout.registers / train_sal.STATE_FIGURE}


def summary(files: dict[str, Path], out: Path, seconds: float) -> str:
    """The closing lines: both tables and where everything is."""
    lines = [f"\nDemo finished in {seconds / 60:.1f} min.",
             f"\nDemo model (saliency network with registers, a = {ALPHA:g}) on the test split:",
             files["results"].read_text(), "Ablation (same data, split and seed):",
             files["ablation"].read_text(), "Registers on the global-context check:",
             files["register ablation"].read_text(), "Files:"]
    lines += [f"  {what:<19}{path}" for what, path in files.items()]
    lines.append(f"  {'everything':<19}{out}/ ({', '.join(f'{f}/' for f in STAGE_FOLDERS)})")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--size", choices=sorted(SIZES), default=SIZE,
                        help=f"small: the demo; tiny: the smallest end-to-end run (default: {SIZE})")
    for setting in fields(DemoSize):
        if setting.type in OPTION_TYPES:
            option = parser.add_argument(
                f"--{setting.name.replace('_', '-')}", type=OPTION_TYPES[setting.type],
                metavar=setting.type.upper(),
                help=f"{setting.metadata['help']} (default: the --size preset's)")
            if setting.name in RENAMED:
                deprecated_alias(parser, RENAMED[setting.name], option)
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the data and the training")
    parser.add_argument("--data-only", action="store_true",
                        help="write the demo's synthetic datasets into <out>/data and stop")
    parser.add_argument("--workers", type=int, default=WORKERS, help="frame-extraction processes")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.check_variant not in (None, *global_context.VARIANTS):
        parser.error(f"--check-variant: one of {', '.join(global_context.VARIANTS)}, "
                     f"not {args.check_variant!r}")
    return args


def chosen_size(args: argparse.Namespace) -> DemoSize:
    """The --size preset with the settings given as options in place of its own."""
    given = {f.name: getattr(args, f.name) for f in fields(DemoSize)
             if getattr(args, f.name, None) is not None}
    return replace(SIZES[args.size], **given)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_only:
        write_data(Layout(Path(args.out), args.seed), chosen_size(args), args.seed)
        return 0
    began = time.perf_counter()
    try:
        files = run_demo(args.out, chosen_size(args), args.seed, args.device, args.workers)
    except (FileExistsError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(files, Path(args.out), time.perf_counter() - began))
    return 0


if __name__ == "__main__":
    run_script(main)
