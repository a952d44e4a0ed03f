"""Every script's --help: a text for every option, every default shown, the README named and
no file that users do not have."""
from __future__ import annotations

import argparse
import re

import pytest

import benchmark
import demo
import evaluate_vqa
import extract_frame
import inference_sal
import train_lsvq
import train_sal
from dagr.cli import default_text, script_parser

SCRIPTS = [extract_frame, train_sal, inference_sal, train_lsvq, evaluate_vqa, demo, benchmark]


class Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def script_parser_of(module, monkeypatch) -> argparse.ArgumentParser:
    """The parser that `module.parse_args` builds, caught before it parses anything."""
    def capture(self, *args, **kwargs):
        raise Captured(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(Captured) as caught:
        module.parse_args([])
    return caught.value.parser


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help block of one option, as --help prints it, whitespace collapsed."""
    formatter = parser.formatter_class(parser.prog)
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_every_option_has_help_and_shows_its_default(module, monkeypatch):
    parser = script_parser_of(module, monkeypatch)
    # deprecated aliases (dagr/cli.py) are hidden from --help on purpose
    options = [a for a in parser._actions
               if a.option_strings and a.dest != "help" and a.help is not argparse.SUPPRESS]
    assert options
    for action in options:
        text = option_help(parser, action)
        assert action.help and action.help.strip(), f"{action.option_strings} has no help text"
        if action.default is None or action.nargs == 0 or isinstance(action.default, bool):
            continue
        shown = default_text(action.default)
        assert f"default: {shown}" in text or ("default" in action.help and shown in text), \
            f"{action.option_strings}: default {shown!r} not in {text!r}"
        assert "{'" not in text, f"{action.option_strings} shows a Python dict: {text!r}"


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_help_names_the_readme_and_not_the_spec(module, capsys):
    with pytest.raises(SystemExit) as stop:
        module.parse_args(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "README.md" in text
    assert not re.search(r"\bSPEC\b", text), "help refers to the SPEC, which users do not have"


def test_a_default_shows_as_typed():
    parser = script_parser(None)
    parser.add_argument("--size", type=int, nargs=2, default=(224, 398), help="frame size")
    parser.add_argument("--rate", type=float, default=0.5, help="50%% share")
    parser.add_argument("--flag", action="store_true", help="a switch")
    parser.add_argument("--maybe", help="used when given")
    text = " ".join(parser.format_help().split())
    assert "frame size (default: 224 398)" in text
    assert "50% share (default: 0.5)" in text
    assert "a switch (default" not in text and "(default: None)" not in text


def test_inference_help_describes_the_map_as_the_readme_does(capsys):
    with pytest.raises(SystemExit):
        inference_sal.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "sigmoid, then min-max" not in text
    assert "sigmoid of the frame's log-softmax" in text
