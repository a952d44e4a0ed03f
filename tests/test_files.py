"""dagr/files.py and dagr/failures.py: outputs that appear whole or not at all, and the
failures CSV."""
import csv
import os
import stat

import pytest

from dagr.failures import Failure, write_failures
from dagr.files import FILE_MODE, atomic_path


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("one")
        assert not target.exists()
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_replaces_a_folder(tmp_path):
    folder = tmp_path / "video"
    for text in ("old", "new"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(text)
    assert (folder / "f").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_write_failures_sorts_rows_and_removes_a_stale_file(tmp_path):
    path = tmp_path / "failures.csv"
    write_failures(path, {"b.mp4": "cannot be opened",
                             "a.mp4": Failure("damaged", "a.mp4: no frames")}, "video")
    with open(path, newline="") as handle:
        assert list(csv.reader(handle)) == [["video", "kind", "problem"],
                                            ["a.mp4", "damaged", "a.mp4: no frames"],
                                            ["b.mp4", "error", "cannot be opened"]]
    assert str(Failure("damaged", "a.mp4: no frames")) == "a.mp4: no frames"
    assert [p.name for p in tmp_path.iterdir()] == ["failures.csv"]  # no temporary left
    write_failures(path, {}, "video")
    assert not path.exists()


def test_atomic_path_gives_a_file_the_mode_of_a_plainly_created_one(tmp_path):
    """A writer that stages with mode 0600 (as safetensors does) still leaves a shareable file."""
    with atomic_path(tmp_path / "shared.bin") as tmp:
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))
    with open(tmp_path / "plain.bin", "w"):
        pass
    mode = stat.S_IMODE((tmp_path / "shared.bin").stat().st_mode)
    assert mode == FILE_MODE == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)
