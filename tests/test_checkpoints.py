"""dagr/checkpoints.py: training checkpoints written atomically, loaded safely, best and last
sharing one file."""
import pytest
import torch

from dagr import checkpoints
from dagr.checkpoints import load_checkpoint, save_checkpoint, save_epoch_checkpoints


def test_checkpoint_round_trip_strips_wrapper_prefixes(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "c.pt", {"model_state": state, "epoch": 4})
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 4 and set(loaded["model_state"]) == {"weight", "bias"}
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a DAGR-VQA checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "no-links"])
def test_epoch_checkpoints_share_one_file_until_best_stops_improving(tmp_path, monkeypatch,
                                                                     links):
    def refuse(*_paths) -> None:
        raise OSError("this file system has no hard links")

    if not links:  # then last.pt is a copy of best.pt
        monkeypatch.setattr(checkpoints.os, "link", refuse)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"

    def save(epoch: int, improved: bool) -> None:
        save_epoch_checkpoints(best, last, {"model_state": {"w": torch.full((2,), epoch)},
                                               "epoch": epoch}, improved)

    def epochs() -> tuple[int, int]:
        return load_checkpoint(best)["epoch"], load_checkpoint(last)["epoch"]

    save(1, improved=True)
    assert epochs() == (1, 1) and best.samefile(last) == links
    save(2, improved=False)
    assert epochs() == (1, 2) and not best.samefile(last)
    assert torch.equal(load_checkpoint(best)["model_state"]["w"], torch.ones(2))
    save(3, improved=True)
    assert epochs() == (3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
