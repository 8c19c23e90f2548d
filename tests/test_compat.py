"""The code stays within Python 3.9, the system Python of RHEL 9 and Debian 11: no syntax,
module or member it lacks (vermin), and the types hold for 3.9 (mypy with python_version
3.9, which also catches a ``str | None`` evaluated at run time)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


@pytest.mark.skipif(_tool("vermin") is None, reason="vermin (pip install -e '.[test]')")
def test_nothing_newer_than_python_3_9() -> None:
    res = subprocess.run([str(_tool("vermin")), "--no-tips", "--violations", "-t=3.9-", "--eval-annotations",
                          "--backport", "dataclasses", "dkms_hooks", "tests", "bench"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(_tool("mypy") is None, reason="mypy (pip install -e '.[test]')")
def test_types_hold_on_python_3_9(tmp_path: Path) -> None:
    res = subprocess.run([str(_tool("mypy")), "--cache-dir", str(tmp_path), "dkms_hooks"], cwd=REPO,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "python_version = \"3.9\"" in (REPO / "pyproject.toml").read_text()
