"""What a regular install ships: every subpackage and the bash reader (an editable install,
which the tests use, would hide a gap here)."""

from __future__ import annotations

import tomllib

from conftest import REPO


def test_every_subpackage_and_data_file_is_shipped() -> None:
    setuptools = __import__("setuptools")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(setuptools.find_packages(where=str(REPO), include=config["packages"]["find"]["include"]))
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dkms_hooks").rglob("__init__.py")}
    assert on_disk <= found
    data = config["package-data"]["dkms_hooks"]
    assert "*.bash" in data and (REPO / "dkms_hooks/readconf.bash").is_file()
