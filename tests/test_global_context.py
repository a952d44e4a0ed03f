"""dagr/global_context.py, the global-context check: by construction, no window around a disk
tells whether it is the salient one, and the baseline's receptive field cannot reach from one
disk to another."""
from __future__ import annotations

import colorsys

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


CONTINUOUS = gc.variant_options("continuous")
CONTINUOUS_SIZE = gc.VARIANTS["continuous"]["size"]


def continuous_layouts(count: int = 40, **options) -> list[gc.Layout]:
    return [gc.video_layout(number, 6, CONTINUOUS_SIZE, seed=3, **CONTINUOUS, **options)[0]
            for number in range(count)]


def hue(colour: str) -> float:
    return colorsys.rgb_to_hsv(*(gc.colour_rgb(colour) / 255))[0]


def test_the_continuous_variant_draws_its_hues_and_disk_counts_per_clip():
    found = continuous_layouts()
    assert {len(layout.colours) for layout in found} == {3, 4, 5}  # the count varies
    for layout in found:
        assert layout.colours.count(layout.salient) == 1
        assert set(layout.colours) == {layout.salient, layout.distractor}
        gap = abs(hue(layout.salient) - hue(layout.distractor))
        assert gc.HUE_GAP - 0.01 <= gap <= 1 - gc.HUE_GAP + 0.01  # on the circle
        assert layout.nearest() >= gc.SEPARATION  # every pair of disks, as in the first check
        low, high = layout.radius, np.array(CONTINUOUS_SIZE) - 1 - layout.radius
        assert ((layout.paths >= low) & (layout.paths <= high)).all()
    # no lookup: the odd and the majority colours are neither six nor of one family
    assert len({layout.salient for layout in found}) > 5 * len(gc.PALETTE)
    families = [{gc.colour_family(getattr(layout, role)) for layout in found}
                for role in ("salient", "distractor")]
    assert families[0] == families[1] == set(gc.PALETTE)


@pytest.mark.parametrize("motion", ["still", "drift"])
def test_the_continuous_variant_hides_the_odd_disk_from_any_window(motion):
    window = gc.SEPARATION - gc.UNET_REACH
    for layout in continuous_layouts(6, motion=motion):
        swapped, mask = gc.counterpart(layout, window)
        assert swapped.salient == layout.distractor and swapped.distractor == layout.salient
        first, second = (gc.render(lay, np.random.default_rng(0)) for lay in (layout, swapped))
        assert np.array_equal(first.frames[mask], second.frames[mask])


def test_hues_and_families_match_the_palette():
    for k, name in enumerate(gc.PALETTE):
        assert gc.hue_colour(k / len(gc.PALETTE)) == gc.colour_hex(name)
        assert gc.colour_family(gc.hue_colour(k / len(gc.PALETTE) + 0.05)) == name
    reds = {name: rgb[0] > 127 for name, rgb in gc.PALETTE.items()}
    for layout in layouts(30):
        assert layout.same_red() == (reds[layout.salient] == reds[layout.distractor])
    with pytest.raises(ValueError, match="#rrggbb"):
        gc.colour_rgb("teal")


def test_a_set_records_how_it_was_drawn(tmp_path):
    root = gc.write_global_context_set(tmp_path / "gc", n_train=2, n_val=1, frames=2,
                                       **gc.VARIANTS["continuous"])
    settings = gc.read_settings(root)
    assert settings == {**CONTINUOUS, "radius": None, "separation": gc.SEPARATION,
                        "motion": gc.MOTION}
    table = pd.read_csv(root / gc.TABLE, dtype={"video": str})
    first = gc.video_layout(599, 2, CONTINUOUS_SIZE, gc.SEED, **settings)[0]
    assert table.loc[0, "salient_rgb"] == first.salient  # the record draws the same clips
    assert table["objects"].between(3, 5).all()
    assert gc.read_settings(tmp_path) == {}  # a set written before settings were recorded
    for text in ("{not json", '{"colours": "rainbow"}', '{"volume": 3}', '[1, 2]'):
        (root / gc.SETTINGS).write_text(text)
        with pytest.raises(ValueError, match=gc.SETTINGS):
            gc.read_settings(root)
