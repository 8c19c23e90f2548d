"""Initramfs regeneration with the real generators, in a throwaway overlay: at most once per
kernel per transaction, and only when a changed module belongs in the image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import needs_kernel
from modsrc import write_module

from system.overlay_helpers import in_overlay, needs_overlay

pytestmark = [pytest.mark.kernel, needs_kernel, needs_overlay]


def kernel_with_initrd() -> str | None:
    for initrd in sorted(Path("/boot").glob("initrd.img-*")):
        kver = initrd.name.removeprefix("initrd.img-")
        if Path(f"/lib/modules/{kver}/build/include").is_dir():
            return kver
    return None


KVER = kernel_with_initrd()
needs_initrd = pytest.mark.skipif(KVER is None, reason="no kernel with both headers and an initrd here")


@needs_initrd
@pytest.mark.skipif(shutil.which("update-initramfs") is None, reason="initramfs-tools missing")
def test_update_initramfs_once_and_only_when_needed(tmp_path: Path) -> None:
    for name in ("gamma", "alpha", "beta"):
        write_module(tmp_path / "src", name)
    res = in_overlay(f"""
sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf
cp -a {tmp_path}/src/gamma-1.0 /usr/src/
dkms add gamma/1.0 >/dev/null
echo "== unlisted"
dkms event apt headers-postinst {KVER}
printf 'alpha\\nbeta\\n' >> /etc/initramfs-tools/modules
cp -a {tmp_path}/src/alpha-1.0 {tmp_path}/src/beta-1.0 /usr/src/
echo "== listed"
# two module packages in one APT run: both queue, Post-Invoke builds both, one initramfs
DPKG_FRONTEND_LOCKED=1 dkms event apt source-configure alpha 1.0
DPKG_FRONTEND_LOCKED=1 dkms event apt source-configure beta 1.0
dkms event apt post-invoke
echo "== image"
lsinitramfs /boot/initrd.img-{KVER} | grep -E '/(alpha|beta|gamma)\\.ko' | sort
""", timeout=900)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    unlisted = out.split("== unlisted\n")[1].split("== listed\n")[0]
    listed = out.split("== listed\n")[1].split("== image\n")[0]
    image = out.split("== image\n")[1].splitlines()
    assert f"  installed  gamma/1.0, {KVER}\n" in unlisted
    assert "Regenerating the initramfs" not in unlisted
    assert listed.count(f"Regenerating the initramfs of {KVER} with update-initramfs... done.") == 1
    assert [p.rsplit("/", 1)[1].split(".ko")[0] for p in image] == ["alpha", "beta"]
    assert all("/updates/dkms/" in p for p in image)


@needs_initrd
@pytest.mark.skipif(not list(Path("/var/cache/dkms-hooks/debs").glob("dracut-core_*.deb")),
                    reason="dracut-core .deb not downloaded (scripts/setup does it)")
def test_dracut_in_the_overlay(tmp_path: Path) -> None:
    write_module(tmp_path / "src", "delta")
    res = in_overlay(f"""
dpkg -i /var/cache/dkms-hooks/debs/*.deb >/dev/null 2>&1
mkdir -p /etc/dkms /etc/dracut.conf.d
echo 'initramfs = "dracut"' > /etc/dkms/dkms-hooks.toml
echo 'add_drivers+=" delta "' > /etc/dracut.conf.d/90-delta.conf
dracut --no-hostonly --kver {KVER} --modules "base kernel-modules" --force /boot/initramfs-{KVER}.img >/dev/null 2>&1
cp -a {tmp_path}/src/delta-1.0 /usr/src/
dkms add delta/1.0 >/dev/null
dkms event apt headers-postinst {KVER}
echo "== image"
lsinitrd /boot/initramfs-{KVER}.img | grep -o 'updates/dkms/delta\\.ko[.a-z]*'
""", timeout=900)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert out.count(f"Regenerating the initramfs of {KVER} with dracut... done.") == 1
    assert out.split("== image\n")[1].startswith("updates/dkms/delta.ko")


@needs_initrd
def test_kernel_install_with_the_real_default_plugins(tmp_path: Path) -> None:
    """Our plugin in /etc/kernel/install.d runs before the distribution's 50-depmod and
    the loader-entry plugins, which all still run."""
    from conftest import REPO

    write_module(tmp_path / "src", "epsilon")
    res = in_overlay(f"""
mkdir -p /etc/kernel/install.d
cp {REPO}/kernel-install.d/40-dkms-hooks.install /etc/kernel/install.d/
cp -a {tmp_path}/src/epsilon-1.0 /usr/src/
dkms add epsilon/1.0 >/dev/null
echo 0123456789abcdef0123456789abcdef > /etc/machine-id
kernel-install -v add {KVER} /boot/vmlinuz-{KVER} 2>&1
echo "== modules.dep"
grep -o 'updates/dkms/epsilon.ko[.a-z]*' /lib/modules/{KVER}/modules.dep
""", timeout=900)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    ours = out.index("40-dkms-hooks.install add")
    depmod = out.index("50-depmod.install add")
    assert ours < depmod
    assert f"  installed  epsilon/1.0, {KVER}" in out
    assert out.split("== modules.dep\n")[1].startswith("updates/dkms/epsilon.ko")
