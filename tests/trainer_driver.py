"""Runs train_sal.py or train_lsvq.py as its command line would, with test instruments; used by
test_distributed.py (under torchrun) and test_crash_resume.py (as a process to kill).

    python trainer_driver.py TRAINER [--trace FILE] [--per-clip] [--kill-after-step N]
        [--kill-in-save N] -- TRAINER OPTIONS ...

--trace FILE: each rank writes FILE.<rank>.json, the list of events of `trace`:
    {"epoch": [sample indices of this rank's shard]} when an epoch starts,
    {"grad": norm of the gradient} before every optimizer step,
    {"step": sha1 of the weights} after it,
    {"end": sha1 of the weights, "loss": the epoch's reported loss} when the epoch ends.
--per-clip: BatchNorm layers become GroupNorm(1, C) and dropout is off, so that the model's
    output for a clip depends on that clip alone (to compare with a single process exactly).
--kill-after-step N: the process sends itself SIGKILL right after its N-th optimizer step.
--kill-in-save N: SIGKILL in the middle of the N-th torch.save of a checkpoint (best.pt or
    last.pt), after half of its bytes are written to the temporary file it goes to.
Each process uses one torch thread.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from dagr import training  # noqa: E402
from torch.optim.optimizer import (register_optimizer_step_post_hook,  # noqa: E402
                                   register_optimizer_step_pre_hook)

BUILDERS = {"train_sal": "build_saliency_model", "train_lsvq": "build_model"}


def weights_digest(optimizer: torch.optim.Optimizer) -> str:
    """sha1 of the weights an optimizer trains, in its order."""
    digest = hashlib.sha1()
    for group in optimizer.param_groups:
        for param in group["params"]:
            digest.update(param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def per_clip(module: nn.Module) -> nn.Module:
    """`module`, changed in place: every BatchNorm replaced by a GroupNorm with one group,
    every dropout off."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.GroupNorm(1, child.num_features))
        else:
            per_clip(child)
    for child in module.modules():
        if isinstance(child, nn.Dropout):
            child.p = 0.0
        elif isinstance(child, nn.MultiheadAttention):
            child.dropout = 0.0
    return module


def gradient_norm(optimizer: torch.optim.Optimizer) -> float:
    """L2 norm of all the gradients an optimizer is about to apply, summed in float64."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    return float(sum(g.double().pow(2).sum() for g in grads) ** 0.5)


def trace(events: list[dict]) -> Callable[[], None]:
    """Append the training loop's epochs and optimizer steps to `events` (see --trace);
    returns the function that stops recording."""
    real = training.train_epoch

    def train_epoch(run, desc):
        events.append({"epoch": list(run.loader.sampler)})
        loss = real(run, desc)
        events.append({"end": weights_digest(run.optimizer), "loss": loss})
        return loss

    training.train_epoch = train_epoch
    hooks = [register_optimizer_step_pre_hook(
                 lambda optimizer, args, kwargs: events.append({"grad": gradient_norm(optimizer)})),
             register_optimizer_step_post_hook(
                 lambda optimizer, args, kwargs: events.append({"step": weights_digest(optimizer)}))]

    def stop() -> None:
        training.train_epoch = real
        for hook in hooks:
            hook.remove()
    return stop


def on_step(action: Callable[[torch.optim.Optimizer], None]) -> None:
    register_optimizer_step_post_hook(lambda optimizer, args, kwargs: action(optimizer))


def kill_after(step: int) -> Callable[[torch.optim.Optimizer], None]:
    steps = []

    def count(optimizer: torch.optim.Optimizer) -> None:
        steps.append(1)
        if len(steps) == step:
            die()
    return count


def kill_in_save(call: int) -> None:
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        # dagr.files.atomic_path writes NAME.pt through a temporary ".NAME.pt.<random>.tmp"
        if isinstance(f, (str, os.PathLike)) and re.fullmatch(r"\..+\.pt\..+\.tmp", Path(f).name):
            calls.append(f)
            if len(calls) == call:
                buffer = io.BytesIO()
                real(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                with open(f, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                die()
        return real(obj, f, *args, **kwargs)

    torch.save = save


def main() -> int:
    argv = sys.argv[1:]
    cut = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("trainer", choices=sorted(BUILDERS))
    parser.add_argument("--trace")
    parser.add_argument("--per-clip", action="store_true")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--kill-in-save", type=int, metavar="N")
    args = parser.parse_args(argv[:cut])
    torch.set_num_threads(1)
    trainer = __import__(args.trainer)
    if args.per_clip:
        build = getattr(trainer, BUILDERS[args.trainer])
        setattr(trainer, BUILDERS[args.trainer], lambda *a, **k: per_clip(build(*a, **k)))
    events: list[dict] = []
    if args.trace:
        trace(events)
    if args.kill_after_step:
        on_step(kill_after(args.kill_after_step))
    if args.kill_in_save:
        kill_in_save(args.kill_in_save)
    try:
        return trainer.main(argv[cut + 1:])
    finally:
        if args.trace:
            Path(f"{args.trace}.{os.environ.get('RANK', '0')}.json").write_text(json.dumps(events))


if __name__ == "__main__":
    sys.exit(main())
