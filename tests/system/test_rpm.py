"""rpm 4.18 runs our scriptlet macros and /usr/src file triggers (paths on stdin)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, REPO, needs_kernel

from system.matrix import RPM_HEADER, rpm_package
from system.overlay_helpers import in_overlay, needs_overlay

pytestmark = [pytest.mark.kernel, needs_kernel, needs_overlay,
              pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="rpm (rpmbuild) needed")]

rpmbuild = rpm_package
HEADER = RPM_HEADER.replace("{release}", "1")


@pytest.mark.parametrize("via", ["file-triggers", "scriptlets"])
def test_file_triggers_or_scriptlets(tmp_path: Path, via: str) -> None:
    triggers = HEADER.format(name="dkms-hooks-triggers", version="0.1") + "%files\n\n" + (
        REPO / "hooks/rpm/dkms-hooks-triggers.spec.in").read_text()
    trigger_rpm = rpmbuild(tmp_path / "t", triggers)
    # the module source package either carries the %post/%preun macros or nothing at all,
    # and then the file triggers of the dkms-hooks package do the work
    scriptlets = """%post
%dkms_hooks_post dkms_hooks_example 1.0
%preun
%dkms_hooks_preun dkms_hooks_example 1.0
""" if via == "scriptlets" else ""
    source = HEADER.format(name="example-kmod-src", version="1.0") + f"""
%install
mkdir -p %{{buildroot}}/usr/src
cp -a {EXAMPLE} %{{buildroot}}/usr/src/
%files
/usr/src/dkms_hooks_example-1.0
{scriptlets}"""
    source_rpm = rpmbuild(tmp_path / "s", source)
    rpm = f"rpm --root / --dbpath {tmp_path}/rpmdb --nodeps"
    res = in_overlay(f"""
rpm --root / --dbpath {tmp_path}/rpmdb --initdb
{"" if via == "scriptlets" else f"{rpm} --force-debian -i {trigger_rpm}"}
{rpm} --force-debian -i {source_rpm}
echo "== status after install"; dkms status
{rpm} --force-debian -e example-kmod-src
echo "== status after erase"; dkms status
find /lib/modules -name 'dkms_hooks_example.ko*'
""")
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    installed = out.split("== status after install\n")[1].split("== status after erase")[0]
    for k in KERNELS:
        assert f"dkms_hooks_example/1.0, {k}, x86_64: installed\n" in installed
    assert out.split("== status after erase\n")[1] == ""


def test_upgrade_keeps_only_the_new_version(tmp_path: Path) -> None:
    specs = {}
    for version in ("1.0", "2.0"):
        src = tmp_path / f"example-{version}"
        shutil.copytree(EXAMPLE, src)
        conf = (src / "dkms.conf").read_text().replace('PACKAGE_VERSION="1.0"', f'PACKAGE_VERSION="{version}"')
        (src / "dkms.conf").write_text(conf)
        specs[version] = rpmbuild(tmp_path / f"s{version}", HEADER.format(name="example-kmod-src", version=version) + f"""
%install
mkdir -p %{{buildroot}}/usr/src
cp -a {src} %{{buildroot}}/usr/src/dkms_hooks_example-{version}
%files
/usr/src/dkms_hooks_example-{version}
%post
%dkms_hooks_post dkms_hooks_example {version}
%preun
%dkms_hooks_preun dkms_hooks_example {version}
%posttrans
%dkms_hooks_posttrans dkms_hooks_example {version}
""")
    rpm = f"rpm --root / --dbpath {tmp_path}/rpmdb --nodeps --force-debian"
    res = in_overlay(f"""
rpm --root / --dbpath {tmp_path}/rpmdb --initdb
{rpm} -i {specs["1.0"]} >/dev/null
{rpm} -U {specs["2.0"]}
echo "== status"; dkms status
""")
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    status = out.split("== status\n")[1]
    assert status == "".join(f"dkms_hooks_example/2.0, {k}, x86_64: installed\n" for k in KERNELS)
