"""dagr/global_context.py, the global-context check: by construction, no window around a disk
tells whether it is the salient one, and the baseline's receptive field cannot reach from one
disk to another."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dagr import global_context as gc
from dagr.datasets import read_saliency_set
from dagr.provenance import is_synthetic

SIZE = (gc.HEIGHT, gc.WIDTH)


def layouts(count: int = 12, **options) -> list[gc.Layout]:
    return [gc.video_layout(number, 6, SIZE, seed=3, **options)[0] for number in range(count)]


@pytest.mark.parametrize("motion", ["still", "drift"])
def test_a_window_around_the_salient_disk_cannot_tell_it_from_a_distractor(motion):
    window = gc.SEPARATION - gc.UNET_REACH  # wider than any pixel the baseline can look from
    for layout in layouts(6, motion=motion):
        swapped, mask = gc.counterpart(layout, window)
        assert swapped.target != layout.target
        assert swapped.colours[layout.target] == layout.colours[layout.target]
        first, second = (gc.render(lay, np.random.default_rng(0)) for lay in (layout, swapped))
        assert np.array_equal(first.frames[mask], second.frames[mask])  # the same pixels ...
        row, col = np.round(layout.paths[layout.target, 0]).astype(int)
        assert first.maps[0, row, col] > 200 and second.maps[0, row, col] < 20  # ... not salient


@pytest.mark.slow
def test_the_baselines_receptive_field_cannot_reach_another_disk():
    assert gc.unet_reach() == gc.UNET_REACH  # measured on the set's frame width
    for layout in layouts():
        assert layout.nearest() >= gc.SEPARATION > gc.UNET_REACH + layout.radius + 1


def test_disks_look_alike_and_colours_take_turns():
    for layout in layouts():
        assert sorted(layout.colours).count(layout.colours[layout.target]) == 1
        assert len(set(layout.colours)) == 2
    # over a block of consecutive pairs every colour is the odd one and the majority alike
    block = gc.PAIRS[:len(gc.PALETTE)]
    assert sorted(a for a, _ in block) == sorted(b for _, b in block) == sorted(gc.PALETTE)
    layout = layouts(1)[0]
    with pytest.raises(ValueError, match="window"):  # a window that would reach another disk
        gc.counterpart(layout, layout.nearest())


def test_the_set_is_written_in_dhf1k_layout_with_its_table(tmp_path):
    root = gc.write_global_context_set(tmp_path / "gc", n_train=3, n_val=2, frames=4)
    videos = {video.video_id: video for video in read_saliency_set("dhf1k", root)}
    assert sorted(videos) == ["0598", "0599", "0600", "0601", "0602"]
    assert [videos[v].split for v in sorted(videos)] == ["train"] * 3 + ["val"] * 2
    table = pd.read_csv(root / gc.TABLE, dtype={"video": str})
    assert table["video"].tolist() == sorted(videos)
    assert (table["salient_colour"] != table["distractor_colour"]).all()
    assert is_synthetic(root)
