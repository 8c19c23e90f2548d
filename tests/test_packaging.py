"""What a regular install ships: every subpackage and the bash reader (an editable install,
which the tests use, would hide a gap here); what `make install` lays out for each distro."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO
from dkms_hooks import debian
from dkms_hooks.paths import Layout


def test_every_subpackage_and_data_file_is_shipped() -> None:
    setuptools = __import__("setuptools")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(setuptools.find_packages(where=str(REPO), include=config["packages"]["find"]["include"]))
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dkms_hooks").rglob("__init__.py")}
    assert on_disk <= found
    data = config["package-data"]["dkms_hooks"]
    assert "*.bash" in data and (REPO / "dkms_hooks/readconf.bash").is_file()


def make_install(dest: Path, *args: str) -> None:
    subprocess.run(["make", "-s", "-C", os.fspath(REPO), "install", f"DESTDIR={dest}", f"PYTHON={sys.executable}",
                    *args], check=True, capture_output=True, text=True)


def shipped_python_files() -> set[str]:
    pkg = REPO / "dkms_hooks"
    return {os.fspath(p.relative_to(REPO)) for p in pkg.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and (p.suffix in (".py", ".bash") or p.name == "py.typed")}


def test_make_install_lays_out_every_distro(tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=all", "PYTHONDIR=/usr/lib/python3/dist-packages")
    files = {os.fspath(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink()}
    expected = {
        "usr/sbin/dkms", "usr/bin/dkms", "usr/share/man/man8/dkms.8",
        "usr/share/bash-completion/completions/dkms", "usr/share/zsh/site-functions/_dkms",
        "usr/lib/kernel/install.d/40-dkms-hooks.install",
        "usr/share/libalpm/hooks/70-dkms-hooks-install.hook", "usr/share/libalpm/hooks/71-dkms-hooks-remove.hook",
        "etc/kernel/preinst.d/dkms-hooks", "etc/kernel/postinst.d/dkms-hooks", "etc/kernel/prerm.d/dkms-hooks",
        "etc/kernel/header_postinst.d/dkms-hooks", "etc/apt/apt.conf.d/90dkms-hooks",
        "usr/lib/dkms/dkms_autoinstaller", "usr/lib/dkms/common.postinst",
        "usr/share/dkms-hooks/dpkg/module-source.postinst", "usr/share/dkms-hooks/dpkg/module-source.prerm",
        "usr/lib/rpm/macros.d/macros.dkms-hooks", "usr/share/dkms-hooks/rpm/dkms-hooks-triggers.spec.in",
        "usr/share/dkms-hooks/eclass/dkms-hooks.eclass",
        "usr/lib/python3/dist-packages/dkms_hooks-0.1.0.dist-info/METADATA",
        "usr/lib/python3/dist-packages/dkms_hooks-0.1.0.dist-info/top_level.txt",
        "usr/lib/python3/dist-packages/dkms_hooks-0.1.0.dist-info/INSTALLER",
    } | {f"usr/lib/python3/dist-packages/{f}" for f in shipped_python_files()}
    assert files == expected
    assert (dest / "etc/dkms/framework.conf.d").is_dir()
    assert os.readlink(dest / "usr/bin/dkms") == "../sbin/dkms"
    for exe in ("usr/sbin/dkms", "usr/lib/kernel/install.d/40-dkms-hooks.install", "etc/kernel/postinst.d/dkms-hooks",
                "usr/lib/dkms/common.postinst"):
        assert os.access(dest / exe, os.X_OK), exe
    assert (dest / "usr/sbin/dkms").read_text().startswith("#!/usr/bin/python3\n")
    for hook in (dest / "usr/share/libalpm/hooks").iterdir():
        assert not os.access(hook, os.X_OK)


def test_debian_helpers_are_what_dkms_itself_would_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # dkms run as root rewrites a helper that carries its marker but differs: the packaged
    # ones must be exactly what it writes under the packaged interpreter
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=debian")
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    debian.install_helpers(Layout(sysroot=tmp_path / "own"))
    for name in debian.HELPERS:
        assert (dest / "usr/lib/dkms" / name).read_text() == (tmp_path / "own/usr/lib/dkms" / name).read_text()


def test_debian_layout_takes_over_the_dkms_package_paths(tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=debian")
    for d in ("preinst", "postinst", "prerm", "header_postinst"):
        assert (dest / f"etc/kernel/{d}.d/dkms").read_text() == (REPO / f"hooks/kernel/{d}.d/dkms-hooks").read_text()
    assert (dest / "usr/lib/python3/dist-packages/dkms_hooks/readconf.bash").is_file()
    assert (dest / "usr/share/zsh/vendor-completions/_dkms").is_file()
    assert not (dest / "usr/share/libalpm").exists() and not (dest / "usr/lib/kernel").exists()


def test_installed_command_runs_from_the_installed_copy(tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=arch", "SBINDIR=/usr/bin", "PYTHONDIR=/usr/lib/site")
    assert not (dest / "usr/sbin").exists()
    site = dest / "usr/lib/site"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.fspath(site), "DKMS_HOOKS_SYSROOT": os.fspath(tmp_path)}
    # the host's python3, which has no dkms_hooks of its own: everything comes from the copy
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    out = subprocess.run([python, "-c", "import dkms_hooks, importlib.metadata as m; "
                          "print(dkms_hooks.__file__, m.version('dkms-hooks'))"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert out == [os.fspath(site / "dkms_hooks/__init__.py"), "0.1.0"]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=arch\n")
    res = subprocess.run([python, os.fspath(dest / "usr/bin/dkms"), "--version"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert (res.returncode, res.stdout) == (0, "dkms-3.4.3\n")
    (tmp_path / "var/lib/dkms").mkdir(parents=True)
    res = subprocess.run([python, os.fspath(dest / "usr/bin/dkms"), "status"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
