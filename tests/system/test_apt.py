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


def test_dkms_never_lays_the_packages_files_and_says_they_are_missing() -> None:
    """Run as the system's dkms (root, no tree options), no command writes Debian's helpers
    under /usr/lib/dkms (they would run whatever interpreter ran dkms: a venv gone
    tomorrow); an event from Debian's hooks says they are missing."""
    res = in_overlay("""
rm -rf /usr/lib/dkms
dkms status
dkms --version >/dev/null
dkms event apt kernel-prerm 9.9.9-1-amd64
test ! -e /usr/lib/dkms && echo "== nothing written"
""")
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("  note: /usr/lib/dkms/dkms_autoinstaller and /usr/lib/dkms/common.postinst missing: Debian's kernel "
            "hooks and dh_dkms module packages cannot reach dkms; reinstall the dkms-hooks package "
            "(or make install DISTRO=debian)\n") in res.stdout
    assert res.stdout.endswith("== nothing written\n")
