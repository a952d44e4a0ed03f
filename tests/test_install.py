"""Packaging and import weight: `pip install .` makes `from dagr import load_model` work from any
folder, and the worker side of the per-video stages loads without torch."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT

# what a worker process imports (dagr/supervised.py starts it with dagr.worker_side)
WORKER_MODULES = ["dagr.worker_side", "dagr.frames", "dagr.video_io", "dagr.failures", "dagr.files"]


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH: imports come from the interpreter's own paths."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def test_the_worker_side_loads_no_torch():
    check = "; ".join([*(f"import {name}" for name in WORKER_MODULES),
                       "import sys", "assert 'torch' not in sys.modules, 'torch was imported'"])
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_dependencies_are_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


@pytest.mark.slow
def test_pip_install_gives_load_model_in_any_folder(tmp_path):
    """Install a copy of the tree (the checkout stays clean) into a fresh virtual environment
    that borrows this one's installed dependencies; then import from an unrelated folder."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "tests", "docs", "__pycache__", "*.egg-info", "build", ".venv"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    packages = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies (torch, ...) of this environment, behind the fresh one's own packages
    borrowed = [*site.getsitepackages(), site.getusersitepackages()]
    (tmp_path / "venv" / packages / "borrowed.pth").write_text("\n".join(borrowed) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "-q", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
                             capture_output=True, text=True, env=clean_env())
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = ("from dagr import load_model; import dagr, VQA, train_sal; "
             f"assert dagr.__file__.startswith({packages!r}), dagr.__file__; "
             f"assert VQA.__file__.startswith({packages!r}), VQA.__file__; print('ok')")
    done = subprocess.run([python, "-c", check], cwd=elsewhere, env=clean_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
