"""The stages run as a user runs them, in a subprocess, optionally with faults struck in the
processes that handle chosen files (tests/fault_site/sitecustomize.py), and the check that no
process a run started outlives it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import ROOT

SITE = Path(__file__).with_name("fault_site")


def stage(script: str, *options: str, faults: dict | None = None, log: Path | None = None,
          marker: str = "") -> subprocess.Popen:
    """Start `script` as a user would, with faults to strike (sitecustomize's DAGR_FAULTS)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(map(str, [SITE, ROOT, ROOT / "tests"])),
           "DAGR_FAULTS": json.dumps(faults or {}), "DAGR_FAULT_LOG": str(log or ""),
           "DAGR_TEST_RUN": marker}
    return subprocess.Popen([sys.executable, str(ROOT / script), *options], env=env, text=True,
                            errors="surrogateescape", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def run(script: str, *options: str, faults: dict | None = None, log: Path | None = None
        ) -> subprocess.CompletedProcess:
    """`stage` to its end; no process it started may be left."""
    marker = uuid.uuid4().hex
    process = stage(script, *options, faults=faults, log=log, marker=marker)
    out, err = process.communicate(timeout=600)
    assert not workers_left(marker)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def workers_left(marker: str) -> list[int]:
    """Processes still alive that a run marked `marker` started (its environment says so)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"DAGR_TEST_RUN={marker}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return found
