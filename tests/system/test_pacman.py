"""pacman 6 runs our alpm hooks: NeedsTargets on stdin, PostTransaction install, PreTransaction removal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, REPO, needs_kernel

from system.matrix import pacman_package
from system.overlay_helpers import in_overlay, needs_overlay

pytestmark = [pytest.mark.kernel, needs_kernel, needs_overlay,
              pytest.mark.skipif(not (shutil.which("pacman") and shutil.which("bsdtar")),
                                 reason="pacman-package-manager and libarchive-tools needed")]


def pacman_pkg(out: Path, name: str, version: str, tree: dict[str, Path] | None = None) -> Path:
    return pacman_package(out, name, version, dict(tree or {}))


def test_pacman_hooks_build_and_remove(tmp_path: Path) -> None:
    hooks = pacman_pkg(tmp_path, "dkms-hooks", "0.1-1")
    module = pacman_pkg(tmp_path, "example-dkms", "1.0-1", {"usr/src/dkms_hooks_example-1.0": EXAMPLE})
    conf = tmp_path / "pacman.conf"
    conf.write_text("[options]\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Never\n")
    pac = (f"pacman --noconfirm --config {conf} --root / --dbpath {tmp_path}/db --cachedir {tmp_path}/cache "
           f"--logfile {tmp_path}/pacman.log --hookdir {REPO}/pacman.d/hooks")
    res = in_overlay(f"""
mkdir -p {tmp_path}/db {tmp_path}/cache
{pac} -U {hooks} >/dev/null
{pac} -U {module}
echo "== status after install"; dkms status
ls /lib/modules/*/updates/dkms/
echo "== remove"
{pac} -R example-dkms
echo "== status after remove"; dkms status
find /lib/modules -name 'dkms_hooks_example.ko*'
""")
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    after_install = out.split("== status after install\n")[1].split("== remove")[0]
    for k in KERNELS:
        assert f"dkms_hooks_example/1.0, {k}, x86_64: installed\n" in after_install
        assert f"Running depmod for {k}... done." in out
    assert "(1/1) Removing DKMS modules..." in out
    tail = out.split("== status after remove\n")[1]
    assert tail == ""
