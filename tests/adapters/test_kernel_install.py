"""The kernel-install plugin driven by the real systemd kernel-install 252, with every path
sandboxed (KERNEL_INSTALL_PLUGINS, BOOT_ROOT, KERNEL_INSTALL_CONF_ROOT, MACHINE_ID, TMPDIR)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import KERNELS, REPO, Sandbox, needs_kernel
from modsrc import write_module

PLUGIN = REPO / "kernel-install.d/40-dkms-hooks.install"
pytestmark = [
    pytest.mark.kernel,
    needs_kernel,
    pytest.mark.skipif(shutil.which("kernel-install") is None, reason="systemd's kernel-install is not installed"),
]


def kernel_install(sandbox: Sandbox, tmp_path: Path, dkms_bin: str, *args: str,
                   plugins: list[Path]) -> subprocess.CompletedProcess[str]:
    for d in ("boot", "conf", "tmp"):
        (tmp_path / "ki" / d).mkdir(parents=True, exist_ok=True)
    env = {
        **sandbox.env,
        "PATH": f"{dkms_bin}:{sandbox.env['PATH']}",
        "KERNEL_INSTALL_PLUGINS": " ".join(str(p) for p in plugins),
        "BOOT_ROOT": str(tmp_path / "ki/boot"),
        "KERNEL_INSTALL_CONF_ROOT": str(tmp_path / "ki/conf"),
        "MACHINE_ID": "0123456789abcdef0123456789abcdef",
        "TMPDIR": str(tmp_path / "ki/tmp"),
    }
    return subprocess.run(["kernel-install", *args], env=env, capture_output=True, text=True)


def marker_plugin(tmp_path: Path) -> Path:
    p = tmp_path / "50-marker.install"
    p.write_text(f'#!/bin/sh\necho "$1 $2" >> "{tmp_path}/marker.log"\n')
    p.chmod(0o755)
    return p


def test_add_builds_for_the_new_kernel_and_later_plugins_still_run(sandbox: Sandbox, tmp_path: Path,
                                                                   dkms_on_path: str) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "kimod")
    write_module(sandbox.source_tree, "kibroken", extra_c="#error broken on purpose")
    for m in ("kimod", "kibroken"):
        sandbox.dkms("add", f"{m}/1.0", check=True)
    image = tmp_path / "vmlinuz"
    image.write_bytes(b"not a kernel")
    res = kernel_install(sandbox, tmp_path, dkms_on_path, "add", k, str(image),
                         plugins=[PLUGIN, marker_plugin(tmp_path)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert list((sandbox.install_tree / k / "updates/dkms").glob("kimod.ko*"))
    assert f"  failed     kibroken/1.0, {k}" in res.stdout
    assert (tmp_path / "marker.log").read_text() == f"add {k}\n"

    res = kernel_install(sandbox, tmp_path, dkms_on_path, "remove", k, plugins=[PLUGIN, marker_plugin(tmp_path)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert not list((sandbox.install_tree / k).rglob("kimod.ko*"))
    assert sandbox.dkms("status").stdout == "kibroken/1.0: added\nkimod/1.0: added\n"
    assert (tmp_path / "marker.log").read_text() == f"add {k}\nremove {k}\n"


def test_critical_failure_fails_kernel_install(sandbox: Sandbox, tmp_path: Path, dkms_on_path: str) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    (sandbox.etc / "dkms-hooks.toml").write_text('critical_modules = ["crit"]\n')
    write_module(sandbox.source_tree, "crit", extra_c="#error broken on purpose")
    sandbox.dkms("add", "crit/1.0", check=True)
    image = tmp_path / "vmlinuz"
    image.write_bytes(b"x")
    res = kernel_install(sandbox, tmp_path, dkms_on_path, "add", k, str(image),
                         plugins=[PLUGIN, marker_plugin(tmp_path)])
    assert res.returncode == 1
    assert not (tmp_path / "marker.log").exists()
