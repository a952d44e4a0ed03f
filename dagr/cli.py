"""What every script shares on the command line: its parser (the docstring as the description,
every default shown, a pointer to the docs), old option names kept for one release
(`deprecated_alias`), and its entry, which turns Ctrl-C into one line and exit status 130.

Imports no project module.
"""
from __future__ import annotations

import argparse
import io
import os
import signal
import sys
from typing import Any, Callable, NoReturn

README_NOTE = "Start at README.md; every option, file format and measured number: docs/."


def default_text(value: Any) -> str:
    """A default as a user would type it: a sequence as its items separated by spaces."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (the script's docstring) and every option's default after
    its help text, unless the text already states it, the default is None (nothing given
    means "not used", said in the text) or the option is a switch."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is argparse.SUPPRESS
                or not action.option_strings or isinstance(default, bool)
                or action.nargs == 0):
            return text
        shown = default_text(default).replace("%", "%%")  # argparse %-formats help texts
        return f"{text} (default: {shown})".lstrip()


def script_parser(description: str | None) -> argparse.ArgumentParser:
    """The parser every script starts from: its docstring as the description, HelpFormatter,
    and a closing line pointing to the documentation."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter,
                                   epilog=README_NOTE)


# ----------------------------------------------------------------------------- renamed options

class DeprecatedAlias(argparse.Action):
    """An old name of an option, kept working for one release: it stores what it is given as
    the new option would (into `target`) and prints one line on stderr naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, target: str, new: str,
                 **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.target, self.new = target, new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        old = option_string or f"positional {self.metavar}"
        print(f"note: {old} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.target, values)


def deprecated_alias(parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str,
                     new: argparse.Action) -> argparse.Action:
    """Keep `old` (an option string such as `--channels`, or a positional's name) working as
    `new` (the action `add_argument` returned for the new name), hidden from --help and the
    usage line. A positional alias takes any number of values and notes only when given."""
    flag = new.option_strings[0]
    if old.startswith("-"):
        return parser.add_argument(old, action=DeprecatedAlias, target=new.dest, new=flag,
                                   nargs=new.nargs, type=new.type, choices=new.choices,
                                   metavar=new.metavar, default=argparse.SUPPRESS,
                                   help=argparse.SUPPRESS)
    # SUPPRESS as the default: argparse calls the action only when values were given
    return parser.add_argument(old, action=DeprecatedAlias, target=new.dest, new=flag,
                               nargs="*", type=new.type, metavar=new.metavar or old.upper(),
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)


# ----------------------------------------------------------------------------- Ctrl-C and workers

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying one line that says what was kept and how to go on."""


def quiet_start() -> None:
    """Called by a script run from the command line before it imports anything heavy: a
    Ctrl-C while its modules load (torch takes seconds) ends it with one line and status 130
    rather than a traceback from inside an import. `run_script` gives Ctrl-C back to Python
    when main starts. (A process that started with Ctrl-C ignored keeps ignoring it.)"""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stopped_while_starting)


def _ignore(*_: Any) -> None:
    pass


def _stopped_while_starting(*_: Any) -> None:
    sys.stderr.write("\ninterrupted: stopped while starting; nothing was done\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)  # inside an import: nothing to clean up, nothing to unwind


def run_script(main: Callable[[], int]) -> NoReturn:
    """Every script's `if __name__ == "__main__":` entry: exit with main()'s status, or, on
    Ctrl-C, with one line on stderr (an `Interrupted`'s message) and status 130 instead of a
    traceback. The stages write every output atomically, so what an interrupted run leaves is
    finished work only."""
    if signal.getsignal(signal.SIGINT) is _stopped_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        # a file name that is not valid UTF-8 prints escaped (as on stderr), not as a traceback
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        code = main()
    except KeyboardInterrupt as err:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not add a traceback
        # an object whose construction Ctrl-C cut short (a tqdm bar) fails in its __del__ when
        # it is collected on the way out; Python would print that as "Exception ignored"
        sys.unraisablehook = _ignore
        message = str(err) if isinstance(err, Interrupted) and str(err) else \
            "stopped before the end; finished work is kept (run again to continue)"
        print(f"\ninterrupted: {message}", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)
