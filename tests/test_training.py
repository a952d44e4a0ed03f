"""dagr/training.py, dagr/distributed.py, dagr/seeding.py and dagr/device.py: the pieces of the
training loop that need no network."""
import csv

import pytest
import torch

from dagr.device import pick_device
from dagr.distributed import Distributed, ShardSampler
from dagr.seeding import rng_state, seed_everything, set_rng_state
from dagr.training import CsvLog, warmup_cosine


def test_shard_sampler_covers_every_index_once():
    for world in (1, 2, 3):
        shards = [ShardSampler(10, Distributed(rank, world), seed=1) for rank in range(world)]
        for sampler in shards:
            sampler.set_epoch(2)
        seen = [i for sampler in shards for i in sampler]
        assert sorted(seen) == list(range(10))
        assert [len(s) for s in shards] == [len(list(s)) for s in shards]
    one = ShardSampler(10, Distributed(), seed=1)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first and sorted(one) == sorted(first)


def test_warmup_cosine_shape():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.2


def test_csv_log_resume_drops_rows_after_checkpoint(tmp_path):
    log = CsvLog(tmp_path / "log.csv", ["epoch", "loss"])
    for epoch in range(4):
        log.append({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
    log.resume_at(2)
    log.append({"epoch": 2, "loss": 9.0})
    with open(tmp_path / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[2]["loss"] == "9"


def test_rng_state_round_trip():
    seed_everything(5)
    state = rng_state()
    first = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), first)


def test_pick_device_refuses_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(RuntimeError, match="--device cuda: PyTorch sees no CUDA GPU"):
        pick_device("cuda")
