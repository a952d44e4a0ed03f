"""What a checkpoint knows it was trained on, the note scoring prints about it and the sidecar
it writes beside the scores, and the trainers' --slim-checkpoints (what the demo keeps)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dagr import demo_data as dq
import train_lsvq as tl
import train_sal
from fakes import tiny_config, tiny_dhf1k
from fakes_vqa import SIZE, saliency_checkpoint, score_videos, stored_quality_set, train_config
from dagr.provenance import (MIN_TRUSTED_VIDEOS, SYNTHETIC_MARKER, TRAINED_ON, mark_synthetic,
                        training_note)
from dagr.checkpoints import RESUME_STATE, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def plain(value) -> bool:
    """Only the types torch.load(weights_only=True) reads without help."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return isinstance(value, (str, int, bool))


@pytest.mark.slow
def test_quality_trainer_records_the_data_and_slims_its_checkpoints(tmp_path, capsys):
    labels, frames, maps = stored_quality_set(tmp_path / "set")
    best = tl.train(train_config(labels, frames, maps, tmp_path / "run", "--epochs", "2",
                                 "--slim-checkpoints"))
    payload = torch.load(best, map_location="cpu", weights_only=False)
    assert payload[TRAINED_ON] == {"dataset": "konvid", "videos": 5, "synthetic": False}
    assert plain(payload[TRAINED_ON])
    assert not set(RESUME_STATE) & set(payload) and not (tmp_path / "run" / "last.pt").exists()
    assert payload["epoch"] >= 1 and "mos_scale" in payload  # what scoring needs is kept

    videos = tmp_path / "videos"
    dq.write_mp4(videos / "a.mp4", np.zeros((4, *SIZE, 3), np.uint8))
    dq.write_mp4(videos / "b.mp4", np.full((4, *SIZE, 3), 90, np.uint8))
    sal = saliency_checkpoint(tmp_path / "sal.pt")
    capsys.readouterr()
    scores, _ = score_videos(best, [videos], tmp_path / "s.csv", sal)
    err = capsys.readouterr().err
    assert len(scores) == 2
    assert err.count("note:") == 1
    assert f"trained on only 5 konvid videos (fewer than {MIN_TRUSTED_VIDEOS})" in err
    meta = json.loads((tmp_path / "s.meta.json").read_text())  # the scores file's sidecar
    assert meta["trained_on"] == "konvid (5 training videos)"
    assert meta["training_record"] == payload[TRAINED_ON]
    assert meta["model"] == {"quality_checkpoint": str(Path(best).resolve()),
                             "saliency_checkpoint": str(sal.resolve())}

    mark_synthetic(labels.parent, "a test")
    best = tl.train(train_config(labels, frames, maps, tmp_path / "synthetic", "--epochs", "1"))
    assert load_checkpoint(best)[TRAINED_ON]["synthetic"] is True
    assert (tmp_path / "synthetic" / "last.pt").exists()  # kept without --slim-checkpoints
    capsys.readouterr()
    score_videos(best, [videos], tmp_path / "s2.csv", sal)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "synthetic demo data" in err
    assert json.loads((tmp_path / "s2.meta.json").read_text())["trained_on"] == \
        "synthetic demo data (5 generated clips in the konvid layout)"


def test_saliency_trainer_records_the_data_and_slims_its_checkpoints(tmp_path):
    root = tiny_dhf1k(tmp_path / "DHF1K")  # demo_data.py's writer: marked synthetic
    assert (root / SYNTHETIC_MARKER).is_file()
    best = train_sal.train(tiny_config(root, tmp_path / "run", "--epochs", "1",
                                       "--slim-checkpoints"))
    payload = torch.load(best, map_location="cpu", weights_only=False)
    assert payload[TRAINED_ON] == {"dataset": "dhf1k", "videos": 3, "synthetic": True}
    assert not set(RESUME_STATE) & set(payload) and not (tmp_path / "run" / "last.pt").exists()
    metrics = train_sal.evaluate(best, "dhf1k", root, "val", "cpu", progress=False)
    assert np.isfinite(metrics["cc"])


@pytest.mark.parametrize("record, expected", [
    ({"dataset": "lsvq", "videos": 27000, "synthetic": False}, None),
    ({"dataset": "konvid", "videos": MIN_TRUSTED_VIDEOS, "synthetic": False}, None),
    ({"dataset": "konvid", "videos": MIN_TRUSTED_VIDEOS - 1, "synthetic": False}, "only"),
    ({"dataset": "konvid", "videos": 5000, "synthetic": True}, "synthetic"),
    (None, None),  # a checkpoint from before the record: nothing to say
])
def test_the_note_speaks_only_of_synthetic_or_few_videos(record, expected):
    note = training_note({} if record is None else {TRAINED_ON: record}, "m.pt")
    assert (note is None) == (expected is None)
    if expected:
        assert note.startswith("note: m.pt was trained on") and expected in note
