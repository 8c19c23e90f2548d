"""Real APT: a module source package's postinst queues its work while APT holds the dpkg
frontend lock, and our DPkg::Post-Invoke step builds it once at the end of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.test_apt import source_deb
from conftest import KERNELS, REPO, needs_kernel
from system.overlay_helpers import in_overlay, needs_overlay

pytestmark = [pytest.mark.kernel, needs_kernel, needs_overlay]


def test_apt_install_defers_to_post_invoke(tmp_path: Path) -> None:
    deb = source_deb(tmp_path, with_scripts=True)
    res = in_overlay(f"""
cp {REPO}/apt.conf.d/90dkms-hooks /etc/apt/apt.conf.d/
for d in postinst.d preinst.d prerm.d header_postinst.d; do
    mkdir -p /etc/kernel/$d; cp {REPO}/hooks/kernel/$d/dkms-hooks /etc/kernel/$d/
done
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {deb} 2>&1
echo "== status"; dkms status
DEBIAN_FRONTEND=noninteractive apt-get purge -y example-dkms 2>&1
echo "== after purge"; dkms status
""", timeout=900)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    queued = out.index("dkms-hooks: source added dkms_hooks_example/1.0 queued until the end of the package transaction")
    setting_up = out.index("Setting up example-dkms (1.0)")
    summary = out.index("dkms-hooks summary:")
    assert setting_up < queued < summary
    status = out.split("== status\n")[1].split("== after purge")[0]
    for k in KERNELS:
        assert f"dkms_hooks_example/1.0, {k}, x86_64: installed\n" in status
    assert out.split("== after purge\n")[1] == ""
