"""Files that appear whole or not at all: the temporary-name-then-rename pattern every output
of the project goes through, the clean-up of what a stopped process left, the check that an
output folder can be written before a run starts, and how a CSV file that names files is
encoded.

Imports no project module.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

# How every CSV file that holds file names or video ids is written and read: UTF-8, with a
# name that is not valid UTF-8 (Python holds its bytes as lone surrogates) written byte for
# byte, so that it reads back as the same name and opens the same file. pandas spells the
# error handler `errors` when writing and `encoding_errors` when reading.
NAMES_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
PANDAS_READ_NAMES = {"encoding": "utf-8", "encoding_errors": "surrogateescape"}


def _file_mode() -> int:
    """The mode `open()` gives a new file under this process's umask (0644 under the usual
    022). os.umask only reads the mask by setting it, so it is read once, at import."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and folders: a reader never sees half of the output. A file gets the
    permissions of a plainly created one (FILE_MODE), whatever wrote it: some writers stage
    their own temporary file with mode 0600 (safetensors does), and outputs are meant to be
    shared.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller creates a file or a folder there
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, FILE_MODE)
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def remove_leftovers(paths: Iterable[str | os.PathLike]) -> None:
    """Remove what `atomic_path(path)` blocks for `paths` left behind when their process was
    stopped inside them (their temporary siblings `.<name>.<random>.tmp`); one listing per
    folder, however many paths."""
    names: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        names.setdefault(path.parent, set()).add(path.name)
    for folder, wanted in names.items():
        if not folder.is_dir():
            continue
        for tmp in folder.iterdir():
            if not (tmp.name.startswith(".") and tmp.name.endswith(".tmp")
                    and tmp.name[1:-4].rsplit(".", 1)[0] in wanted):
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)



def creatable_folder(path: str | os.PathLike) -> Path:
    """Check, creating nothing, that files can be written in the folder `path`: in it if it
    exists, else in its nearest existing ancestor, where it would be created. A run refused
    later (a bad model file) then leaves no empty folder behind. Raises OSError naming it."""
    path = Path(path)
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise _cannot_write(path, err) from err
    return path


def writable_folder(path: str | os.PathLike) -> Path:
    """Create the output folder `path` if needed, once `creatable_folder` has checked that
    files can be written there, so that a run fails at its start rather than at its first
    save. Raises OSError naming it."""
    path = creatable_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_write(path, err) from err
    return path


def _cannot_write(path: Path, err: OSError) -> OSError:
    return OSError(f"{path}: output folder cannot be written ({err.strerror or err})")
