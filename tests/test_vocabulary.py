"""One vocabulary across the scripts (docs/design.md, "Command lines"): renamed options keep
their old names for one release with a one-line note, and the options both trainers share are
declared once."""
from __future__ import annotations

import argparse

import pytest

import benchmark
import extract_frame
import inference_sal
import train_lsvq
import train_sal
from dagr.cli import deprecated_alias, script_parser
from test_help import script_parser_of

# (script, the old form, the new option's dest, the value it gets, the old name in the note)
RENAMED = [
    (train_sal, ["--channels", "8"], "saliency_width", 8, "--channels"),
    (extract_frame, ["a.mp4", "b/"], "videos", ["a.mp4", "b/"], "positional INPUT"),
    (extract_frame, ["--dataset", "konvid", "--labels", "l.csv", "--video-root", "v/"], "root",
     "v/", "--video-root"),
    (inference_sal, ["--video", "a.mp4", "--all-frames"], "videos", ["a.mp4"], "--video"),
    (benchmark, ["--warmup", "3"], "warmup_calls", 3, "--warmup"),
]
SHARED = ("size", "epochs", "batch_size", "lr", "seed", "grad_accum", "clip_grad", "workers",
          "sync_bn", "resume", "slim_checkpoints", "precision", "compile", "device")


@pytest.mark.parametrize("module, argv, dest, value, old", RENAMED,
                         ids=[f"{r[0].__name__} {r[4]}" for r in RENAMED])
def test_an_old_name_still_works_with_one_line_on_stderr(module, argv, dest, value, old, capsys):
    args = module.parse_args(argv)
    assert getattr(args, dest) == value
    new = "--" + dest.replace("_", "-")
    assert capsys.readouterr().err == f"note: {old} is deprecated; use {new}\n"


@pytest.mark.parametrize("module, argv, dest, value, old", RENAMED,
                         ids=[f"{r[0].__name__} {r[4]}" for r in RENAMED])
def test_the_new_name_gives_the_same_without_a_note(module, argv, dest, value, old, capsys):
    new = "--" + dest.replace("_", "-")
    given = [new, *argv] if not old.startswith("-") else [new if a == old else a for a in argv]
    assert getattr(module.parse_args(given), dest) == value
    assert capsys.readouterr().err == ""


def test_an_alias_is_hidden_and_leaves_the_default_alone(capsys):
    parser = script_parser(None)
    deprecated_alias(parser, "--old-width", parser.add_argument(
        "--width", type=int, default=64, help="base width"))
    deprecated_alias(parser, "inputs", parser.add_argument(
        "--videos", nargs="+", metavar="INPUT", help="video files"))
    assert vars(parser.parse_args([])) == {"width": 64, "videos": None}
    assert capsys.readouterr().err == ""  # a positional alias notes only when given
    text = parser.format_help()
    assert "--old-width" not in text and "inputs" not in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--old-width", "wide"])  # the new option's type checks the old name


def test_the_trainers_declare_their_shared_options_once(monkeypatch):
    """Same names, types, forms and help in both trainers; only the defaults are each
    trainer's constants."""
    def declared(module) -> dict[str, tuple]:
        parser = script_parser_of(module, monkeypatch)
        return {a.dest: (tuple(a.option_strings), a.type, a.nargs, a.metavar, a.help, a.choices)
                for a in parser._actions if a.dest in SHARED}
    sal, lsvq = declared(train_sal), declared(train_lsvq)
    assert set(sal) == set(SHARED)
    assert sal == lsvq
