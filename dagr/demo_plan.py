"""The demo's plan: its presets (every size and setting of a run), its runs, and where it writes.

demo.py runs the stages by this plan and dagr/demo_report.py reads their outputs by it.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from dagr import demo_data, global_context, paper
from dagr.ablation import run_folder, variants

REGISTERS = paper.REGISTERS  # register tokens of the saliency network that has them
ALPHA = 0.5                  # saliency weighting of the demo quality model
# the saliency networks, by name: the runs of the global-context check's ablation
# (docs/registers.md has its other variants: input, FiLM, token write, N = 1, 8)
SALIENCY_RUNS = {"baseline": "baseline", "registers": "attention"}
SALIENCY_NAMES = {"registers": f"UNet3D + {REGISTERS} registers",
                  "baseline": "UNet3D (no registers)", None: "-"}
QUALITY_RUNS = {          # name: (saliency run whose maps it reads, or None; weighting a)
    "saliency_registers": ("registers", ALPHA),
    "saliency_baseline": ("baseline", ALPHA),
    "no_saliency": (None, 0.0),
}
DEMO_MODEL = "saliency_registers"
CHECK_DIR = "GlobalContext"     # the global-context check's folder under data/
SALIENCY_LAYOUT = "dhf1k"       # the --dataset of the check (its layout)
QUALITY_LAYOUT = "konvid"       # the --dataset of the quality set
STAGE_FOLDERS = ("data", "frames", "maps", "quality", "eval", "registers")


def about(text: str, default: Any = MISSING) -> Any:
    """A DemoSize field with its --help text (and its value in every preset, if given)."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class DemoSize:
    """How big a demo run is and how it trains: the data written, the training each network
    gets, and what the figures show. The fields without a default differ between presets."""
    quality_clips: int = about("quality set: clips (of --clip-frames frames)")
    quality_epochs: int = about("quality training epochs")
    check_train: int = about("global-context check: training videos")
    check_val: int = about("global-context check: validation videos")
    check_width: int = about("global-context check: U-Net base width")
    check_epochs: int = about("global-context check: training epochs")
    check_clips: int = about("global-context check: training clips (frames) per video and epoch")
    clip_frames: int = about("frames per quality clip written", 4)
    backbone: str = about("quality network backbone, trained from scratch (nothing to download)",
                          "resnet18")
    quality_batch: int = about("quality training clips per batch", 8)
    quality_lr: float = about("quality peak learning rate", 7e-4)
    quality_warmup: float = about("quality warm-up epochs", 0.5)
    val_fraction: float = about("quality split: validation share of the non-test clips", 0.2)
    test_fraction: float = about("quality split: test share of all clips", 0.4)
    # the saliency networks see clips this long, and the quality network as many frames
    check_clip_len: int = about("global-context check: frames per clip; frames kept per "
                                "quality clip", 1)
    check_val_clips: int = about("global-context check: validation clips per video", 2)
    check_batch: int = about("global-context check: clips per batch", 4)
    check_lr: float = about("global-context check: peak learning rate", 1e-3)
    check_warmup: float = about("global-context check: warm-up epochs (20 of 120 steps)", 1 / 6)
    loader_workers: int = about("data-loading processes of the trainers, the maps and the "
                                "evaluation (0: in the main process)", 0)
    attention_clips: int = about("validation clips of the check in register_attention.png", 3)
    check_variant: str = about("global-context check: palette (six colours, 3 disks) or "
                               "continuous (hues drawn per clip, 3 to 5 disks)", "palette")

    @property
    def check_size(self) -> tuple[int, int]:
        """The frames (H, W) of the check and of the quality clips: a wide strip, as the
        check's variant draws them."""
        return global_context.VARIANTS[self.check_variant]["size"]


# small: 720 / 180 / 600 quality clips (train / validation / test), as a smaller test split
# cannot tell models 0.03 SRCC apart, and the epochs after which the register maps beat no
# saliency on every seed tried (docs/demo.md, "How the demo's size was chosen")
SIZES = {
    "tiny": DemoSize(quality_clips=24, quality_epochs=2, check_train=4, check_val=2,
                     check_width=2, check_epochs=1, check_clips=1),
    "small": DemoSize(quality_clips=1500, quality_epochs=6, check_train=240, check_val=60,
                      check_width=8, check_epochs=7, check_clips=2),
}


@dataclass(frozen=True)
class Layout:
    """Where a demo run writes, all under `out`, with `seed`'s runs of the check."""
    out: Path
    seed: int = 0

    @property
    def saliency_set(self) -> Path:
        return self.out / "data" / demo_data.SALIENCY_DIR

    @property
    def quality_set(self) -> Path:
        return self.out / "data" / demo_data.QUALITY_DIR

    @property
    def labels(self) -> Path:
        return self.quality_set / demo_data.QUALITY_LABELS

    @property
    def check_set(self) -> Path:
        return self.out / "data" / CHECK_DIR

    @property
    def registers(self) -> Path:
        return self.out / "registers"

    @property
    def test_labels(self) -> Path:
        return self.out / "eval" / "KoNViD_1k_mos_test.csv"

    @property
    def frames(self) -> Path:
        return self.out / "frames"

    def saliency_run(self, name: str) -> Path:
        """Saliency network `name` (of SALIENCY_RUNS): its run in the check's ablation."""
        return run_folder(self.registers, variants(REGISTERS)[SALIENCY_RUNS[name]], self.seed)

    def maps(self, name: str) -> Path:
        return self.out / "maps" / name

    def quality_run(self, name: str) -> Path:
        return self.out / "quality" / name

    def evaluation(self, name: str) -> Path:
        return self.out / "eval" / name
