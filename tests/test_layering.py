"""The layering of the code, read from every module's imports (ast, function-level imports included).

The library (datasets/, losses/, models/, utils/) is what the entry scripts, tools/, bench/ and tests/ build on, so
it imports none of them; utils/ holds the helpers below the models, so it imports no module of models/; the data
layer does not depend on the command-line options. No script edits sys.path: the repository root is importable
through tools/setup_env.sh (a .pth file) and pytest.ini (``pythonpath``).
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("datasets", "losses", "models", "utils")
ENTRY_SCRIPTS = ("train", "infer_val", "eval_seg")
NOT_FOR_THE_LIBRARY = ENTRY_SCRIPTS + ("tools", "bench", "tests")
CODE_DIRS = LIBRARY + ("tools", "bench", "tests")


def _modules() -> list[str]:
    """Every Python file of the project, relative to the root: the entry scripts and the code folders."""
    paths = [f"{name}.py" for name in ENTRY_SCRIPTS]
    for top in CODE_DIRS:
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            paths += sorted(os.path.relpath(os.path.join(folder, f), ROOT) for f in files if f.endswith(".py"))
    return paths


MODULES = _modules()


def _tree(path: str) -> ast.Module:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def imported(path: str) -> set[str]:
    """The absolute module names ``path`` imports anywhere (relative imports stay inside their package)."""
    names = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _top(path: str) -> str:
    return path.split(os.sep)[0]


def _within(names: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n.split(".")[0] in packages)


def test_the_layers_are_found():
    found = {_top(p) for p in MODULES}
    assert found >= set(CODE_DIRS) and os.path.join("utils", "checkpoints.py") in MODULES


@pytest.mark.parametrize("path", [p for p in MODULES if _top(p) in LIBRARY])
def test_the_library_imports_no_script_tool_bench_or_test(path):
    assert _within(imported(path), NOT_FOR_THE_LIBRARY) == []


@pytest.mark.parametrize("path", [p for p in MODULES if _top(p) == "utils"])
def test_utils_imports_no_model(path):
    assert _within(imported(path), ("models",)) == []


@pytest.mark.parametrize("path", [p for p in MODULES if _top(p) == "datasets"])
def test_the_data_layer_needs_no_command_line_options(path):
    assert "utils.opts" not in imported(path)


def _edits_sys_path(node: ast.AST) -> bool:
    """``sys.path.insert(...)`` / ``sys.path.append(...)``, or such a call in a string run by ``python -c``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("insert", "append"):
        target = node.func.value
        return (isinstance(target, ast.Attribute) and target.attr == "path" and isinstance(target.value, ast.Name)
                and target.value.id == "sys")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return any(f"sys.path.{verb}(" in node.value for verb in ("insert", "append"))
    return False


@pytest.mark.parametrize("path", [p for p in MODULES if p != os.path.relpath(__file__, ROOT)])
def test_no_script_edits_sys_path(path):
    lines = sorted({node.lineno for node in ast.walk(_tree(path)) if _edits_sys_path(node)})
    assert lines == [], f"{path} edits sys.path on lines {lines}"
