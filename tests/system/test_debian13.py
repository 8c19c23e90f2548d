"""Debian 13 (the cached trixie root) without the kernel's module compressor: dkms installs
the module uncompressed, as upstream does, instead of failing the build."""

from __future__ import annotations

import pytest
from conftest import EXAMPLE

from system.roots import in_root, needs_root, root_kernels

pytestmark = [pytest.mark.kernel, needs_root("trixie")]


def test_a_root_without_xz_installs_modules_uncompressed() -> None:
    kver = root_kernels("trixie")[-1]
    res = in_root("trixie", f"""
rm -f /usr/bin/xz /bin/xz
cp -a {EXAMPLE} /usr/src/
dkms install dkms_hooks_example/1.0 -k {kver}
echo "@@ status"; dkms status
echo "@@ files"; find /usr/lib/modules/{kver}/updates -name 'dkms_hooks_example.ko*' -printf '%P\\n'
echo "@@ vermagic"; modinfo -F vermagic /usr/lib/modules/{kver}/updates/dkms/dkms_hooks_example.ko
echo "@@ journal"; ls /var/lib/dkms/.dkms-hooks/journal 2>/dev/null || true
echo "@@ end"
""")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "xz not found: dkms_hooks_example.ko is installed uncompressed." in res.stderr
    assert out.split("@@ status\n")[1].split("@@")[0] == f"dkms_hooks_example/1.0, {kver}, x86_64: installed\n"
    assert out.split("@@ files\n")[1].split("@@")[0] == "dkms/dkms_hooks_example.ko\n"
    assert out.split("@@ vermagic\n")[1].split("@@")[0].startswith(f"{kver} ")
    assert out.split("@@ journal\n")[1].split("@@")[0] == ""
