"""Proof on a booted kernel: the module our ``dkms`` builds and installs for the 6.12 kernel
loads in that very kernel (Debian's image, booted under qemu), while the kernel refuses
the same module built for another kernel, and, with signatures enforced, an unsigned one."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel

from system.qemu_helpers import (
    Boot,
    boot,
    missing_for_boot,
    pack_initramfs,
    plain_module,
    section,
    step,
    vmlinuz,
)  # fmt: skip

MODULE = "dkms_hooks_example"
LOADED = f"{MODULE}: loaded, built by dkms-hooks"  # the example's printk on init
_612 = [k for k in KERNELS if k.startswith("6.12.")]
BOOTED = next((k for k in _612 if vmlinuz(k).is_file()), _612[-1] if _612 else None)
OTHER = next((k for k in KERNELS if k.startswith("6.1.")), None)
WHY_NOT = missing_for_boot(BOOTED)

pytestmark = [pytest.mark.kernel, needs_kernel, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]


def installed_module(sandbox: Sandbox, kver: str, dest: Path) -> Path:
    """``dkms install`` the example for ``kver``; its installed file, decompressed to ``dest``."""
    sandbox.dkms("install", f"{MODULE}/1.0", "-k", kver, check=True)
    found = sorted((sandbox.install_tree / kver / "updates/dkms").glob(f"{MODULE}.ko*"))
    assert len(found) == 1, f"installed for {kver}: {found}"
    return plain_module(found[0], dest)


def add_example(sandbox: Sandbox, *kernels: str) -> None:
    for k in kernels:
        sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", f"{MODULE}/1.0", check=True)


def boot_with(tmp_path: Path, steps: str, files: dict[str, Path], append: str = "") -> Boot:
    assert BOOTED is not None
    initrd = pack_initramfs(tmp_path, steps, files)
    result = boot(vmlinuz(BOOTED), initrd, tmp_path / "serial.log", append=append)
    assert result.finished, "the guest never reached the end of /init\n" + result.tail()
    assert f"=== INIT kernel {BOOTED} " in result.log, result.tail()
    return result


@pytest.mark.skipif(OTHER is None, reason="no 6.1 kernel headers for the negative control")
def test_module_installed_by_dkms_loads_in_the_booted_kernel(sandbox: Sandbox, tmp_path: Path) -> None:
    assert BOOTED is not None and OTHER is not None
    add_example(sandbox, BOOTED, OTHER)
    good = installed_module(sandbox, BOOTED, tmp_path / "good.ko")
    other = installed_module(sandbox, OTHER, tmp_path / "other.ko")

    # the wrong kernel's build first: it carries the same module name as the good one
    steps = step("other", "insmod /other.ko") + step("good", "insmod /good.ko")
    steps += section("modules", "cat /proc/modules")
    result = boot_with(tmp_path, steps, {"good.ko": good, "other.ko": other})

    assert result.step_rc("other") not in (None, 0), result.tail()
    assert "insmod: can't insert '/other.ko': invalid module format" in result.log, result.tail()
    assert result.step_rc("good") == 0, result.tail()
    assert LOADED in result.log, result.tail()
    assert result.log.count(LOADED) == 1, result.tail()  # the refused build never ran its init
    loaded = [line for line in result.section("modules").splitlines() if line.startswith(f"{MODULE} ")]
    assert len(loaded) == 1 and " Live " in loaded[0], result.tail()


def test_enforced_signatures_refuse_the_unsigned_build(sandbox: Sandbox, tmp_path: Path) -> None:
    assert BOOTED is not None
    add_example(sandbox, BOOTED)
    framework = sandbox.etc / "framework.conf"
    framework.write_text("try_sign_modules=true\n")
    signed = installed_module(sandbox, BOOTED, tmp_path / "signed.ko")
    framework.write_text("try_sign_modules=false\n")
    sandbox.dkms("unbuild", f"{MODULE}/1.0", "-k", BOOTED, check=True)
    unsigned = installed_module(sandbox, BOOTED, tmp_path / "unsigned.ko")
    assert b"~Module signature appended~\n" in signed.read_bytes()
    assert b"~Module signature appended~\n" not in unsigned.read_bytes()

    steps = step("unsigned", "insmod /unsigned.ko") + step("signed", "insmod /signed.ko")
    steps += section("modules", "cat /proc/modules")
    files = {"unsigned.ko": unsigned, "signed.ko": signed}
    result = boot_with(tmp_path, steps, files, append="module.sig_enforce=1")

    assert " sig_enforce=Y" in result.log, result.tail()
    assert result.step_rc("unsigned") not in (None, 0), result.tail()
    assert "Loading of unsigned module is rejected" in result.log, result.tail()
    assert "insmod: can't insert '/unsigned.ko': Key was rejected by service" in result.log, result.tail()
    # our self-signed key is not one the kernel trusts, yet the signature is read as one
    assert result.step_rc("signed") not in (None, 0), result.tail()
    assert "Loading of module with unavailable key is rejected" in result.log, result.tail()
    assert LOADED not in result.log, result.tail()
    assert MODULE not in result.section("modules"), result.tail()
