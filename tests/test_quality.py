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
RAY_MODULES = {"runner.py", "raysession.py", "refine.py", "tileloop.py", "placement.py", "submit.py"}
"""The orchestration modules: the only ones that import ray."""


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


def test_ray_only_in_orchestration_and_torch_only_in_models():
    modules = _modules()
    assert {name for name, tree in modules.items() if "ray" in _imported(tree)} <= RAY_MODULES
    torch_users = {name for name, tree in modules.items() if {"torch", "torchvision"} & _imported(tree)}
    # geoseg/testutils writes random SAM checkpoints for the tests: test support, not part of a run
    assert {name for name in torch_users if not name.startswith(("models/", "testutils/"))} == set()


def test_no_isinstance_on_model_specs_outside_the_model_table():
    """Which spec goes with which model is the model table's business (geoseg/models/table.py)."""
    offenders = []
    for name, tree in _modules().items():
        if name.startswith("models/") or name == "spec.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                kinds = node.args[1]
                elements = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
                if any(isinstance(e, ast.Name) and e.id.endswith("Spec") for e in elements):
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders
