"""Proof under Secure Boot: Debian's signed shim, grub and 6.12 kernel boot under qemu with
OVMF's Microsoft-keyed variables, so the kernel is locked down and trusts only Debian's keys
and the MOK list. The module our ``dkms`` builds, signs and installs loads once its
certificate is in the MOK list, and is refused without it, as are an unsigned build and one
signed by another key. The firmware variables, lockdown and keys the booted kernel shows are
carried back into the sandbox root, so the warning before the reboot and ``status --json``
are judged on what a real Secure Boot machine exposes."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel

from dkms_hooks.model import x509
from system.efi_boot import MOUNT_EFI, efi_boot, efi_files, missing_for_efi_boot
from system.qemu_helpers import Boot, pack_initramfs, plain_module, section, step, vmlinuz

MODULE = "dkms_hooks_example"
LOADED = f"{MODULE}: loaded, built by dkms-hooks"
_612 = [k for k in KERNELS if k.startswith("6.12.")]
BOOTED = next((k for k in _612 if vmlinuz(k).is_file()), _612[-1] if _612 else None)
WHY_NOT = missing_for_efi_boot(BOOTED)
SIGN_FILE = sorted(Path("/usr/lib").glob("linux-kbuild-6.12*/scripts/sign-file"))

pytestmark = [pytest.mark.kernel, needs_kernel, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]

# what the booted machine exposes, printed for the test to carry back (base64: binary variables)
_CAPTURE = section("efivars", 'cd /sys/firmware/efi/efivars && for f in SecureBoot-* MokListRT-* MokNew-*; do '
                              '[ -f "$f" ] && { echo "file $f"; base64 -w 0 "$f"; echo; }; done; cd /')
_CAPTURE += section("lockdown", "cat /sys/kernel/security/lockdown")
_CAPTURE += section("keys", "cat /proc/keys")


def installed_module(sandbox: Sandbox, dest: Path) -> tuple[Path, str]:
    """``dkms install`` the example for the booted kernel: its file (decompressed to
    ``dest``) and what dkms printed on stderr."""
    assert BOOTED is not None
    res = sandbox.dkms("install", f"{MODULE}/1.0", "-k", BOOTED, check=True)
    [found] = sorted((sandbox.install_tree / BOOTED / "updates/dkms").glob(f"{MODULE}.ko*"))
    return plain_module(found, dest), res.stderr


def boot(tmp_path: Path, name: str, modules: dict[str, Path], mok: Path | None) -> Boot:
    assert BOOTED is not None
    work = tmp_path / name
    work.mkdir()
    steps = MOUNT_EFI + "".join(step(n, f"insmod /{n}.ko") for n in modules) + _CAPTURE
    files = {f"{n}.ko": p for n, p in modules.items()} | efi_files(BOOTED, work)
    initrd = pack_initramfs(work, steps, files)
    # the kernel's own boot messages (Secure Boot, lockdown, the keys it loads) are pr_info
    result = efi_boot(vmlinuz(BOOTED), initrd, work, work / "serial.log", mok_der=mok, append="loglevel=7")
    assert result.finished, "the guest never reached the end of /init\n" + result.tail()
    assert f"=== INIT kernel {BOOTED} " in result.log, result.tail()
    # Secure Boot as the firmware reports it, and the lockdown it brings
    assert "secureboot: Secure boot enabled" in result.log, result.tail()
    assert "Kernel is locked down from EFI Secure Boot" in result.log, result.tail()
    assert result.section("lockdown").strip() == "none [integrity] confidentiality", result.tail()
    return result


def carry_back(result: Boot, root: Path) -> None:
    """The booted machine's variables, lockdown, keys and release, laid out in ``root`` as a
    machine lays them out."""
    efivars = root / "sys/firmware/efi/efivars"
    if efivars.exists():
        for old in efivars.iterdir():
            old.unlink()
    efivars.mkdir(parents=True, exist_ok=True)
    for name, data in re.findall(r"^file (\S+)\n(\S*)$", result.section("efivars"), re.MULTILINE):
        (efivars / name).write_bytes(base64.b64decode(data))
    for rel, text in (("sys/kernel/security/lockdown", result.section("lockdown")),
                      ("proc/keys", result.section("keys")), ("proc/sys/kernel/osrelease", f"{BOOTED}\n")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def loads(sandbox: Sandbox) -> dict[str, str]:
    doc = json.loads(sandbox.dkms("status", "--json", check=True).stdout)
    [entry] = [e for e in doc["entries"] if e["kernel"] == BOOTED]
    [module] = entry["modules"]
    return module["loads"]  # type: ignore[no-any-return]


@pytest.mark.skipif(not SIGN_FILE, reason="no sign-file for the 6.12 kernel")
def test_secure_boot_refuses_until_the_certificate_is_enrolled(sandbox: Sandbox, tmp_path: Path) -> None:
    assert BOOTED is not None
    sandbox.add_kernel(BOOTED)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", f"{MODULE}/1.0", check=True)
    ours, stderr = installed_module(sandbox, tmp_path / "ours.ko")
    assert "Secure Boot" not in stderr, "the sandbox says nothing of Secure Boot yet: no warning"
    cert = sandbox.dkms_tree / "mok.pub"
    mine = x509.parse(cert.read_bytes())
    assert mine.ca and mine.key_usage == frozenset({"keyCertSign"})

    # the same module unsigned, and signed by a key nobody enrolled
    parts = x509.split_module(ours.read_bytes())
    assert parts is not None
    unsigned, other = tmp_path / "unsigned.ko", tmp_path / "other.ko"
    unsigned.write_bytes(parts[0])
    other.write_bytes(parts[0])
    key, other_cert = tmp_path / "other.key", tmp_path / "other.der"
    subprocess.run(["openssl", "req", "-new", "-x509", "-nodes", "-days", "30", "-subj", "/CN=another key",
                    "-newkey", "rsa:2048", "-keyout", str(key), "-outform", "DER", "-out", str(other_cert)],
                   check=True, capture_output=True)
    subprocess.run([str(SIGN_FILE[-1]), "sha256", str(key), str(other_cert), str(other)], check=True)

    # 1. not enrolled: our module is refused like the other key's
    result = boot(tmp_path, "not-enrolled", {"ours": ours}, mok=None)
    assert result.step_rc("ours") not in (None, 0), result.tail()
    assert "Loading of module with unavailable key is rejected" in result.log, result.tail()
    assert "insmod: can't insert '/ours.ko': Key was rejected by service" in result.log, result.tail()
    assert LOADED not in result.log, result.tail()
    assert mine.kernel_description not in result.section("keys"), result.tail()

    # on that machine, dkms says so before the reboot, and status --json agrees with the boot
    carry_back(result, sandbox.root)
    assert loads(sandbox) == {"verdict": "no", "why": "its certificate is not enrolled"}
    sandbox.dkms("unbuild", f"{MODULE}/1.0", "-k", BOOTED, check=True)
    ours, stderr = installed_module(sandbox, tmp_path / "ours.ko")
    assert (f"Warning: Secure Boot is on, and the certificate that signed the modules built for {BOOTED} "
            f"({cert}) is not enrolled: they will not load. Enrol it with dkms mok enroll") in stderr
    doc = json.loads(sandbox.dkms("mok", "status", "--json", check=True).stdout)
    assert (doc["secure_boot"], doc["lockdown"], doc["certificate"]["trust"]) == (True, "integrity", "untrusted")

    # 2. enrolled (shim's MokList in the firmware's variables): ours loads, the others do not
    modules = {"unsigned": unsigned, "other": other, "ours": ours}
    result = boot(tmp_path, "enrolled", modules, mok=cert)
    assert f"integrity: Loaded X.509 cert '{mine.kernel_description}'" in result.log, result.tail()
    assert result.step_rc("unsigned") not in (None, 0), result.tail()
    assert "Loading of unsigned module is rejected" in result.log, result.tail()
    assert "insmod: can't insert '/unsigned.ko': Key was rejected by service" in result.log, result.tail()
    assert result.step_rc("other") not in (None, 0), result.tail()
    assert "insmod: can't insert '/other.ko': Key was rejected by service" in result.log, result.tail()
    assert result.step_rc("ours") == 0, result.tail()
    assert result.log.count(LOADED) == 1, result.tail()

    # and on the enrolled machine, dkms sees the key enrolled and in the running kernel
    carry_back(result, sandbox.root)
    assert loads(sandbox) == {"verdict": "yes", "why": "its key is in the running kernel's keyrings"}
    doc = json.loads(sandbox.dkms("mok", "status", "--json", check=True).stdout)
    assert doc["certificate"]["trust"] == "trusted" and doc["certificate"]["kernel_keyring"] == ""
    assert mine.key_id in [c["key_id"] for c in doc["enrolled"]]
    sandbox.dkms("unbuild", f"{MODULE}/1.0", "-k", BOOTED, check=True)
    _, stderr = installed_module(sandbox, tmp_path / "again.ko")
    assert "Secure Boot" not in stderr, stderr
