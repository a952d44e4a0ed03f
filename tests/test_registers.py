"""dagr/registers.py: where each register looks (maps of the frame's shape summing to 1 over
it) and what the registers hold over many videos (principal components, coloured by a property
of the video)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dagr import global_context as gc
from dagr import registers
from dagr.evaluation import evaluation_clips
from dagr.datasets import read_saliency_set
from fakes import tiny_dhf1k
from pictures import png_image
from sal_withreg import RegisterUNet3D

pytestmark = pytest.mark.usefixtures("one_thread")


def test_attention_maps_have_the_frames_shape_and_sum_to_one_over_each_frame():
    torch.manual_seed(0)
    model = RegisterUNet3D(4, registers=3).eval()
    clips = torch.rand(2, 3, 5, 33, 47)
    maps = registers.attention_maps(model, clips)
    assert maps.shape == (2, 3, 5, 33, 47) and (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(2, 3, 5))
    assert not torch.allclose(maps[:, 0], maps[:, 1])  # each register looks its own way


def test_principal_components_find_the_direction_of_most_spread():
    rng = np.random.default_rng(0)
    line = rng.normal(size=(50, 1)) * np.array([[3.0, 4.0, 0.0]])  # along (3, 4, 0) / 5
    points = line + rng.normal(scale=0.01, size=(50, 3))
    first = registers.principal_components(points, 1)[:, 0]
    assert abs(np.corrcoef(first, line[:, 0])[0, 1]) > 0.999


def test_register_states_of_every_video_and_their_figure(tmp_path):
    root = tiny_dhf1k(tmp_path / "DHF1K", n_train=1, n_val=4, frames=6)
    videos = [v for v in read_saliency_set("dhf1k", root) if v.split == "val"]
    torch.manual_seed(0)
    model = RegisterUNet3D(4, registers=2)
    ids, states = registers.register_states(model, evaluation_clips(videos, 4, (32, 48), 2),
                                            torch.device("cpu"))
    assert ids == [v.video_id for v in videos] and states.shape == (4, 2, 16)
    assert not np.allclose(states[0], states[1])  # attention registers depend on the video
    (tmp_path / "categories.csv").write_text("video,salient_colour\n601,red\n602,blue\n603,red\n")
    categories = registers.video_categories(tmp_path / "categories.csv")
    assert categories == {"0601": "red", "0602": "blue", "0603": "red"}
    path = registers.write_state_figure(ids, states, tmp_path / "states.png", "t", categories)
    png_image(path)
    with pytest.raises(ValueError, match="no column 'salient_colour'"):
        (tmp_path / "other.csv").write_text("video,kind\n601,x\n")
        registers.video_categories(tmp_path / "other.csv")


class WholeFrame(torch.nn.Module):
    """A saliency network that sees the whole frame: a pixel's brightness minus the frame's."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Parameter(torch.tensor([0.5, 0.3, 0.2]))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1, T, H, W)"""
        brightness = torch.einsum("c,bcthw->bthw", self.mix, clips)[:, None]
        return brightness - brightness.mean(dim=(-2, -1), keepdim=True)


def test_far_context_is_exactly_nothing_for_the_baseline_and_seen_by_a_whole_frame_network():
    torch.manual_seed(0)
    baseline = RegisterUNet3D(4, registers=0)
    effect = registers.far_context_effect(baseline, (24, 384), 2, torch.device("cpu"), videos=6)
    assert effect["far_change"] == 0.0  # its receptive field cannot reach the far disks
    assert effect["odd_first"] in {k / 12 for k in range(13)}  # 6 clips and 6 counterparts
    effect = registers.far_context_effect(WholeFrame(), (24, 384), 2, torch.device("cpu"),
                                          videos=6)
    assert abs(effect["far_change"]) > 1e-5  # one disk of 28 pixels in 9,216 changes colour


def test_odd_first_is_split_by_whether_the_colours_agree_in_red():
    effect = registers.far_context_effect(WholeFrame(), (24, 384), 1, torch.device("cpu"),
                                          videos=12)
    same = [gc.video_layout(number, 1, (24, 384), registers.FAR_SEED)[0].same_red()
            for number in range(gc.LAST_TRAIN + 1, gc.LAST_TRAIN + 13)]
    assert 0 < sum(same) < len(same)  # both kinds among the clips
    pooled = (effect["odd_first_same_red"] * sum(same)
              + effect["odd_first_other_red"] * (len(same) - sum(same))) / len(same)
    assert effect["odd_first"] == pytest.approx(pooled)


def test_the_far_context_test_draws_the_sets_own_kind_of_clip():
    """On the continuous-colour variant (3 to 5 disks on a wider strip) the baseline's far
    change is exactly nothing too."""
    settings = gc.variant_options("continuous")
    effect = registers.far_context_effect(RegisterUNet3D(2, registers=0),
                                          gc.VARIANTS["continuous"]["size"], 1,
                                          torch.device("cpu"), videos=4, settings=settings)
    assert effect["far_change"] == 0.0 and 0 <= effect["odd_first"] <= 1
