import csv

import pytest
import torch

import runtime as rt
import training


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with rt.atomic_path(target) as tmp:
        tmp.write_text("one")
        assert not target.exists()
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with rt.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_replaces_a_folder(tmp_path):
    folder = tmp_path / "video"
    for text in ("old", "new"):
        with rt.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(text)
    assert (folder / "f").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_checkpoint_round_trip_strips_wrapper_prefixes(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    rt.save_checkpoint(tmp_path / "c.pt", {"model_state": state, "epoch": 4})
    loaded = rt.load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 4 and set(loaded["model_state"]) == {"weight", "bias"}
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable checkpoint"):
        rt.load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a DAGR-VQA checkpoint"):
        rt.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        rt.load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "no-links"])
def test_epoch_checkpoints_share_one_file_until_best_stops_improving(tmp_path, monkeypatch,
                                                                     links):
    def refuse(*_paths) -> None:
        raise OSError("this file system has no hard links")

    if not links:  # then last.pt is a copy of best.pt
        monkeypatch.setattr(rt.os, "link", refuse)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"

    def save(epoch: int, improved: bool) -> None:
        rt.save_epoch_checkpoints(best, last, {"model_state": {"w": torch.full((2,), epoch)},
                                               "epoch": epoch}, improved)

    def epochs() -> tuple[int, int]:
        return rt.load_checkpoint(best)["epoch"], rt.load_checkpoint(last)["epoch"]

    save(1, improved=True)
    assert epochs() == (1, 1) and best.samefile(last) == links
    save(2, improved=False)
    assert epochs() == (1, 2) and not best.samefile(last)
    assert torch.equal(rt.load_checkpoint(best)["model_state"]["w"], torch.ones(2))
    save(3, improved=True)
    assert epochs() == (3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_shard_sampler_covers_every_index_once():
    for world in (1, 2, 3):
        shards = [training.ShardSampler(10, training.Distributed(rank, world), seed=1) for rank in range(world)]
        for sampler in shards:
            sampler.set_epoch(2)
        seen = [i for sampler in shards for i in sampler]
        assert sorted(seen) == list(range(10))
        assert [len(s) for s in shards] == [len(list(s)) for s in shards]
    one = training.ShardSampler(10, training.Distributed(), seed=1)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first and sorted(one) == sorted(first)


def test_warmup_cosine_shape():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = training.warmup_cosine(optimizer, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.2


def test_csv_log_resume_drops_rows_after_checkpoint(tmp_path):
    log = training.CsvLog(tmp_path / "log.csv", ["epoch", "loss"])
    for epoch in range(4):
        log.append({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
    log.resume_at(2)
    log.append({"epoch": 2, "loss": 9.0})
    with open(tmp_path / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[2]["loss"] == "9"


def test_rng_state_round_trip():
    rt.seed_everything(5)
    state = rt.rng_state()
    first = torch.rand(3)
    rt.set_rng_state(state)
    assert torch.equal(torch.rand(3), first)


def test_pick_device_refuses_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rt.pick_device("cpu").type == "cpu"
    with pytest.raises(SystemExit, match="no CUDA"):
        rt.pick_device("cuda")


def test_write_failures_sorts_rows_and_removes_a_stale_file(tmp_path):
    path = tmp_path / "failures.csv"
    rt.write_failures(path, {"b.mp4": "cannot be opened",
                             "a.mp4": rt.Failure("damaged", "a.mp4: no frames")}, "video")
    with open(path, newline="") as handle:
        assert list(csv.reader(handle)) == [["video", "kind", "problem"],
                                            ["a.mp4", "damaged", "a.mp4: no frames"],
                                            ["b.mp4", "error", "cannot be opened"]]
    assert str(rt.Failure("damaged", "a.mp4: no frames")) == "a.mp4: no frames"
    assert [p.name for p in tmp_path.iterdir()] == ["failures.csv"]  # no temporary left
    rt.write_failures(path, {}, "video")
    assert not path.exists()
