"""Fault injection for tests/test_containment.py, with no hook in the code under test: with this
folder first on PYTHONPATH, every Python process of a run (the main process and each worker
process it starts) imports this module at start-up, and when DAGR_FAULTS is set it wraps the
project's file access so that one chosen file strikes its fault (tests/faults.py):

- dagr.video_io.open_video (every decoder: sampling, overlay videos), by the video's file name;
- dagr.images.read_image (stored frames and maps), by the name of the video's folder;
- dagr.images.write_png, by the video id of the folder being written (`.<id>.<random>.tmp`).

DAGR_FAULTS is JSON {"open": {name: fault}, "read": {...}, "write": {...}}; each strike first
appends the name to the file DAGR_FAULT_LOG, if set, so that a test sees which files were tried.
"""
import json
import os
from pathlib import Path

_FAULTS = json.loads(os.environ.get("DAGR_FAULTS", "{}"))


def _strike_for(kind: str, name: str) -> None:
    fault = _FAULTS.get(kind, {}).get(name)
    if fault is None:
        return
    if os.environ.get("DAGR_FAULT_LOG"):
        with open(os.environ["DAGR_FAULT_LOG"], "a", errors="surrogateescape") as log:
            log.write(f"{kind} {name}\n")
    from faults import strike
    strike(fault)


def _install() -> None:
    from dagr import images, video_io

    open_video, read_image, write_png = video_io.open_video, images.read_image, images.write_png

    def faulty_open(path, *args, **kwargs):
        _strike_for("open", Path(path).name)
        return open_video(path, *args, **kwargs)

    def faulty_read(path, *args, **kwargs):
        _strike_for("read", Path(path).parent.name)
        return read_image(path, *args, **kwargs)

    def faulty_write(path, *args, **kwargs):
        folder = Path(path).parent.name  # atomic_path's `.<id>.<random>.tmp`
        _strike_for("write", folder[1:].rsplit(".", 2)[0] if folder.endswith(".tmp") else folder)
        return write_png(path, *args, **kwargs)

    video_io.open_video, images.read_image, images.write_png = faulty_open, faulty_read, faulty_write


if _FAULTS:
    _install()
