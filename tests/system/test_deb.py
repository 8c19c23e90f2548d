"""The real .deb (packaging/deb/build-deb.sh) on this machine's real dpkg and APT, in a
throwaway overlay: it replaces Debian's own dkms package, and when APT installs a kernel
headers package that was not there, the package's hooks build and install the example
module for that kernel."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLE, REPO, needs_kernel

from system.overlay_helpers import in_overlay, needs_overlay

pytestmark = [pytest.mark.kernel, needs_kernel, needs_overlay]

#: flavours of the headers already installed here; the first one APT knows is installed
_NEW_HEADERS = ("linux-headers-6.1.0-56-cloud-amd64", "linux-headers-6.12.111+deb12-cloud-amd64")


def new_headers() -> str:
    for pkg in _NEW_HEADERS:
        known = subprocess.run(["apt-cache", "show", pkg], capture_output=True, text=True).returncode == 0
        installed = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        ).stdout.startswith("install ok installed")
        if known and not installed:
            return pkg
    pytest.skip("no headers package to install that APT knows and this machine lacks")


def test_deb_replaces_dkms_and_builds_for_new_headers(tmp_path: Path) -> None:
    deb = subprocess.run(
        [REPO / "packaging/deb/build-deb.sh", tmp_path], capture_output=True, text=True, check=True
    ).stdout.strip()
    headers = new_headers()
    kver = headers.removeprefix("linux-headers-")
    res = in_overlay(
        f"""
export DEBIAN_FRONTEND=noninteractive
# this test is about the packaged command, not the checkout's wrapper the overlay sets up
rm -f /usr/bin/dkms /usr/sbin/dkms
apt-get install -y --no-install-recommends dkms python3-pluggy >/dev/null 2>&1
echo "== before: dkms $(dpkg-query -W -f='${{Version}} ${{Status}}' dkms)"
dpkg -i {deb} 2>&1
status() {{ dpkg-query -W -f='${{Status}}' "$1"; }}
echo "== after: dkms $(status dkms) / dkms-hooks $(status dkms-hooks)"
echo "== owner: $(dpkg -S /usr/sbin/dkms /etc/kernel/header_postinst.d/dkms | tr '\\n' ' ')"
cp -r {EXAMPLE} /usr/src/dkms_hooks_example-1.0
dkms add dkms_hooks_example/1.0
apt-get install -y --no-install-recommends {headers} 2>&1
echo "== compiled: $(ls /usr/lib/python3/dist-packages/dkms_hooks/cli/__pycache__ | grep -c '^main[.]')"
echo "== man: $(man -w dkms)"
echo "== completion: $(bash -c '. /usr/share/bash-completion/completions/dkms
    COMP_WORDS=(dkms remove ""); COMP_CWORD=2; _dkms; echo "${{COMPREPLY[*]}}"')"
echo "== status"; dkms status -k {kver}
echo "== modinfo"; modinfo -F vermagic /lib/modules/{kver}/updates/dkms/dkms_hooks_example.ko*
""",
        timeout=1200,
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert (
        "== before: dkms 3.0.10" in out and "install ok installed" in out.split("== before")[1].split("\n")[0]
    )
    assert "will remove dkms in favour of dkms-hooks" in out
    # dpkg removed dkms for us; the conffiles it kept are ours now
    assert "== after: dkms install ok config-files / dkms-hooks install ok installed" in out
    assert "Installing new version of config file /etc/kernel/postinst.d/dkms ..." in out
    assert "dkms-hooks: /usr/sbin/dkms dkms-hooks: /etc/kernel/header_postinst.d/dkms" in out
    assert "== compiled: 1\n" in out  # py3compile ran
    assert "== man: /usr/share/man/man8/dkms.8.gz\n" in out
    assert "== completion: dkms_hooks_example/1.0\n" in out
    assert f"Setting up {headers}" in out
    assert "dkms-hooks summary:" in out.split(f"Setting up {headers}")[1]
    assert (
        out.split("== status\n")[1].split("== modinfo")[0]
        == f"dkms_hooks_example/1.0, {kver}, x86_64: installed\n"
    )
    # a kernel with headers only has no modules.dep yet, so (as upstream) no depmod ran for it
    assert out.split("== modinfo\n")[1].startswith(f"{kver} SMP")
