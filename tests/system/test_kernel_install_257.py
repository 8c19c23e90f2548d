"""systemd 257's kernel-install in the cached Debian 13 root, with its real plugins (depmod,
dracut 106, ukify, loader entries): ``add-all`` with the BLS and the UKI layout builds our
module into the image it makes; a module package installed afterwards (by pacman 7 and our
hooks) reaches that image too, through ``kernel-install add`` run again; ``remove`` drops
the module for the kernel. What is checked is the content of the initrd (for a UKI, of its
``.initrd`` section), not that a file exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLE, REPO

from system.matrix import NAME, OLD, pacman_package, sources
from system.roots import in_root, needs_root, root_kernels

pytestmark = [pytest.mark.kernel, needs_root("trixie")]

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("layout", ["bls", "uki"])
def test_add_all_then_a_module_package_then_remove(layout: str, tmp_path: Path) -> None:
    kver = root_kernels("trixie")[-1]
    mx = pacman_package(tmp_path, "mx-dkms", OLD, {f"usr/src/{NAME}-{OLD}": sources(tmp_path)[OLD]})
    hooks = pacman_package(tmp_path, "dkms-hooks", "0.1-1", {})  # the hooks' Depends
    image = (f"/boot/EFI/Linux/{TOKEN}-{kver}.efi" if layout == "uki" else f"/boot/{TOKEN}/{kver}/initrd")
    conf = tmp_path / "pacman.conf"
    conf.write_text("[options]\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Never\n")
    pac = (f"pacman --noconfirm --config {conf} --root / --dbpath {tmp_path}/db --cachedir {tmp_path}/cache "
           f"--logfile {tmp_path}/pacman.log --hookdir {REPO}/pacman.d/hooks")
    res = in_root("trixie", f"""
K={kver}
echo {TOKEN} > /etc/machine-id
cp /boot/vmlinuz-$K /usr/lib/modules/$K/vmlinuz
mkdir -p /etc/kernel/install.d /etc/dracut.conf.d {tmp_path}/db {tmp_path}/cache
echo layout={layout} > /etc/kernel/install.conf
cp {REPO}/kernel-install.d/40-dkms-hooks.install /etc/kernel/install.d/
# modules the initrd must hold, by name, as a user with a module needed at boot would say
echo 'add_drivers+=" dkms_hooks_example {NAME} "' > /etc/dracut.conf.d/50-dkms-hooks-test.conf
list() {{
    if [ "{layout}" = uki ]; then
        objcopy -O binary --only-section=.initrd {image} /tmp/initrd
        lsinitrd /tmp/initrd
    else
        lsinitrd {image}
    fi | grep -o '[^/]*\\.ko[.a-z]*$' | grep -E '^(dkms_hooks_example|{NAME})\\.' | sort || true
}}
{pac} -U {hooks} >/dev/null
cp -a {EXAMPLE} /usr/src/
dkms add dkms_hooks_example/1.0 >/dev/null
kernel-install add-all
echo "@@ status after add-all"; dkms status
echo "@@ image after add-all"; list
echo "@@ the module package"
{pac} -U {mx}
echo "@@ image after the module package"; list
echo "@@ remove"; kernel-install remove $K
echo "@@ status after remove"; dkms status
echo "@@ files after remove"; find /usr/lib/modules -path '*/updates/dkms/*' -name '*.ko*'
echo "@@ end"
""", share=(tmp_path,), timeout=900)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr

    def part(name: str) -> str:
        return ("\n" + out.split(f"@@ {name}\n")[1]).split("\n@@ ")[0][1:] + "\n"

    assert part("status after add-all") == f"dkms_hooks_example/1.0, {kver}, x86_64: installed\n", out
    assert part("image after add-all") == "dkms_hooks_example.ko.xz\n", out + res.stderr
    module = part("the module package")
    assert f"  installed  {NAME}/{OLD}, {kver}\n" in module
    assert f"Regenerating the initramfs of {kver} with kernel-install... done." in module, module
    assert part("image after the module package") == f"dkms_hooks_example.ko.xz\n{NAME}.ko.xz\n", out + res.stderr
    assert part("status after remove") == f"dkms_hooks_example/1.0: added\n{NAME}/{OLD}: added\n", out
    assert part("files after remove") == "\n"
