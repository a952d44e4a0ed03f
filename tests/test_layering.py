"""The house rules, read from the imports of every file (docs/design.md, "Layering"): the root
holds the paper's files and two entry points; no stage script imports another script; the
package imports no script; the networks import only each other; metrics.py imports no project
file; dataloader.py no network and no script; and no file imports itself through others.

Every import counts, also one inside a function: hiding an import circle there is still one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = "dagr"
STAGES = {"extract_frame", "train_sal", "inference_sal", "train_lsvq", "evaluate_vqa"}
ENTRY_POINTS = {"demo", "benchmark"}
SCRIPTS = STAGES | ENTRY_POINTS
NETWORKS = {"sal_withoutreg", "sal_withreg", "VQA"}
ROOT_FILES = SCRIPTS | NETWORKS | {"dataloader", "metrics"}


def project_modules(root: Path) -> dict[str, Path]:
    """{module name: file} of the root's .py files and the package's modules."""
    modules = {path.stem: path for path in root.glob("*.py")}
    modules |= {f"{PACKAGE}.{path.stem}": path for path in (root / PACKAGE).glob("*.py")
                if path.stem != "__init__"}
    if (root / PACKAGE / "__init__.py").is_file():
        modules[PACKAGE] = root / PACKAGE / "__init__.py"
    return modules


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules that the file `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from dagr import figures` imports the module dagr.figures
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}


def violations(root: Path) -> list[str]:
    """Every broken rule of the tree at `root`, one line each."""
    graph, found = import_graph(root), []
    extra = sorted(name for name in graph if "." not in name and name != PACKAGE
                   and name not in ROOT_FILES)
    if extra:
        found.append(f"root files beyond the paper's and the entry points: {extra}")
    for name, imported in sorted(graph.items()):
        if name in STAGES and imported & (SCRIPTS - {name}):
            found.append(f"{name}.py imports the script(s) {sorted(imported & SCRIPTS)}")
        if name.startswith(PACKAGE) and imported & SCRIPTS:
            found.append(f"{name} (the package) imports the script(s) {sorted(imported & SCRIPTS)}")
        if name in NETWORKS and imported - NETWORKS:
            found.append(f"{name}.py (a network) imports {sorted(imported - NETWORKS)}")
        if name == "metrics" and imported:
            found.append(f"metrics.py imports {sorted(imported)}")
        if name == "dataloader" and imported & (NETWORKS | SCRIPTS):
            found.append(f"dataloader.py imports {sorted(imported & (NETWORKS | SCRIPTS))}")
    found += [f"import circle: {' -> '.join(circle)}" for circle in circles(graph)]
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path for each import circle found by a depth-first walk."""
    found, done, path = [], set(), []

    def walk(name: str) -> None:
        if name in path:
            found.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        path.append(name)
        for imported in sorted(graph.get(name, ())):
            walk(imported)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        walk(name)
    return found


def test_the_repository_keeps_the_house_rules():
    assert violations(ROOT) == []


def test_the_package_is_what_the_root_scripts_call():
    graph = import_graph(ROOT)
    assert {name for name in graph if name.startswith(f"{PACKAGE}.")} >= {
        "dagr.training", "dagr.checkpoints", "dagr.datasets", "dagr.paper"}
    for stage in STAGES:  # every stage script calls into the package
        assert any(name.startswith(PACKAGE) for name in graph[stage]), stage


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, broken", [
    ({"train_sal.py": "import train_lsvq\n", "train_lsvq.py": ""}, "train_sal.py imports the script"),
    ({"evaluate_vqa.py": "def f():\n    from train_lsvq import train\n", "train_lsvq.py": ""},
     "evaluate_vqa.py imports the script"),
    ({"dagr/__init__.py": "", "dagr/scoring.py": "import evaluate_vqa\n", "evaluate_vqa.py": ""},
     "dagr.scoring (the package) imports the script"),
    ({"VQA.py": "from dagr import paper\n", "dagr/__init__.py": "", "dagr/paper.py": ""},
     "VQA.py (a network) imports"),
    ({"dagr/__init__.py": "", "dagr/a.py": "from dagr import b\n",
      "dagr/b.py": "def f():\n    import dagr.a\n"}, "import circle: dagr.a -> dagr.b -> dagr.a"),
    ({"helpers.py": ""}, "root files beyond"),
])
def test_each_rule_fails_when_broken(tmp_path, files, broken):
    found = violations(write_tree(tmp_path, files))
    assert any(broken in line for line in found), found


def test_a_clean_tree_passes(tmp_path):
    tree = write_tree(tmp_path, {"train_sal.py": "from dagr import training\nimport dataloader\n",
                                 "dataloader.py": "from dagr import video_io\n",
                                 "dagr/__init__.py": "", "dagr/training.py": "import sal_withreg\n",
                                 "dagr/video_io.py": "", "sal_withreg.py": "import sal_withoutreg\n",
                                 "sal_withoutreg.py": "import torch\n"})
    assert violations(tree) == []
