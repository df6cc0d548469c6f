"""Lint and type checks run with the tests (ruff; mypy with the pydantic plugin on geoseg, tests and benchmarks)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return path


def test_ruff_clean():
    proc = subprocess.run([_tool("ruff"), "check", "geoseg", "tests", "benchmarks", "jobs", "infra"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean():
    proc = subprocess.run([_tool("mypy"), "geoseg", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------- architecture
PACKAGE = REPO / "geoseg"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
STAGES = ("spec", "inputs", "models", "plan", "stitch", "run", "export")
"""The stage folders in import order: a module imports only from its own stage and the stages before it."""
BASE = {"errors", "atomic"}
"""Top-level modules every stage may use."""
TOP = {"pipeline", "launch", "train", "cli", "qgis_plugin", "__init__", "testutils"}
"""Above every stage: they may import any."""


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(tree: ast.Module) -> set[str]:
    """Top-level packages a module imports anywhere (also inside functions)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_modules_and_functions_are_small():
    long_modules = {
        name: n for name in _modules() if (n := len((PACKAGE / name).read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long_modules
    long_functions = [
        f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long_functions


def test_ray_only_under_run_and_torch_only_under_models():
    modules = _modules()
    assert {name for name, tree in modules.items() if "ray" in _imported(tree) and not name.startswith("run/")} == set()
    torch_users = {name for name, tree in modules.items() if {"torch", "torchvision"} & _imported(tree)}
    # geoseg/testutils writes random SAM checkpoints for the tests: test support, not part of a run
    assert {name for name in torch_users if not name.startswith(("models/", "testutils/"))} == set()


def _stage(module: str) -> int:
    """The stage rank of a module path (``run/passes.py``) or dotted name (``geoseg.run.passes``)."""
    parts = module.removeprefix("geoseg.").replace("/", ".").removesuffix(".py").split(".")
    if parts[0] in STAGES:
        return STAGES.index(parts[0]) + 1
    if parts[0] in BASE or parts[0] == "geoseg":
        return 0
    assert parts[0] in TOP, f"{module} is neither a stage folder nor a known top-level module"
    return len(STAGES) + 1


def _geoseg_imports(tree: ast.Module, runtime_only: bool) -> set[str]:
    """geoseg modules imported (``runtime_only``: at module level, outside ``if TYPE_CHECKING``)."""
    nodes = tree.body if runtime_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("geoseg"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("geoseg")}
    return names


def _dotted(path: str) -> str:
    return "geoseg." + path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def test_no_module_imports_from_a_later_stage():
    later = [
        f"{name} imports {imported}"
        for name, tree in _modules().items()
        for imported in _geoseg_imports(tree, runtime_only=False)
        if _resolves(imported) and _stage(_resolves(imported)) > _stage(name)
    ]
    assert not later


def _resolves(dotted: str) -> str:
    """The module a dotted import name is (an attribute import resolves to its module); '' if none."""
    for candidate in (dotted, dotted.rpartition(".")[0]):
        path = PACKAGE.parent / candidate.replace(".", "/")
        if path.with_suffix(".py").exists() or (path / "__init__.py").exists():
            return candidate
    return ""


def test_no_import_cycles():
    graph = {
        _dotted(name): {m for i in _geoseg_imports(tree, runtime_only=True) if (m := _resolves(i))}
        for name, tree in _modules().items()
    }
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt != node and state.get(nxt) == 1 and not nxt.startswith(node + "."):
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles


def test_every_stage_folder_says_what_it_is():
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
        assert doc and doc.startswith(f"{STAGES.index(stage) + 1}. "), stage


def test_no_isinstance_on_model_specs_outside_the_model_table():
    """Which spec goes with which model is the model table's business (geoseg/models/table.py)."""
    offenders = []
    for name, tree in _modules().items():
        if name.startswith(("models/", "spec/")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                kinds = node.args[1]
                elements = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
                if any(isinstance(e, ast.Name) and e.id.endswith("Spec") for e in elements):
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders
