"""The package's layers hold: import-linter's contracts (pyproject.toml) pass, and an import
inside a function is there for start-up speed and says so, never to dodge a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dkms_hooks

PACKAGE = Path(dkms_hooks.__file__).parent
REPO = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_hold() -> None:
    tool = Path(sys.executable).with_name("lint-imports")
    if not tool.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    res = subprocess.run([str(tool), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 kept, 0 broken" in res.stdout


def _function_imports() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.append((str(path.relative_to(PACKAGE)), node.lineno, lines[node.lineno - 1]))
    return found


def test_an_import_inside_a_function_says_why() -> None:
    """Allowed: the module-level ``__getattr__`` that imports pluggy on demand, and
    compat's version switch; every other one carries a ``# lazy:`` reason."""
    unexplained = [f"{where}:{line}: {text.strip()}" for where, line, text in _function_imports()
                   if "# lazy:" not in text and where not in ("__init__.py", "system/compat.py")]
    assert unexplained == []


def test_every_module_is_in_the_readme_layout() -> None:
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## Tests")]
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name not in ("__init__.py", "__main__.py") and "adapters" not in p.parts)
    assert [m for m in modules if f"`{m}`" not in layout] == []
