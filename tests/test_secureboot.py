"""Reading the Secure Boot state from a root's efivars, MOK variables, lockdown and
/proc/keys, as a machine lays them out (fabricated here: this VM boots without EFI)."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

from dkms_hooks.model.paths import Layout
from dkms_hooks.model.secureboot import EFI_GLOBAL, SHIM_LOCK, State, Trust, read_state, signature_list_certs

X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le
SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328").bytes_le
OWNER = uuid.UUID(SHIM_LOCK).bytes_le


def siglist(kind: bytes, *items: bytes) -> bytes:
    size = 16 + max(len(i) for i in items)
    body = b"".join(OWNER + i.ljust(size - 16, b"\0") for i in items)
    return kind + struct.pack("<III", 28 + len(body), 0, size) + body


def efivar(root: Path, name: str, guid: str, data: bytes) -> None:
    d = root / "sys/firmware/efi/efivars"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}-{guid}").write_bytes(struct.pack("<I", 7) + data)


def test_signature_lists_hold_several_kinds() -> None:
    a, b = b"0\x82cert-a", b"0\x82cert-bb"
    data = siglist(SHA256, b"h" * 32, b"i" * 32) + siglist(X509, a) + siglist(X509, b)
    assert signature_list_certs(data) == [a, b]
    assert signature_list_certs(data[:-3]) == [a], "a truncated list is not read past its end"
    assert signature_list_certs(b"") == []


def test_a_secure_boot_machine_with_a_pending_key(tmp_path: Path) -> None:
    ours, other = b"0\x82our-cert", b"0\x82distro-cert"
    efivar(tmp_path, "SecureBoot", EFI_GLOBAL, b"\x01")
    efivar(tmp_path, "MokListRT", SHIM_LOCK, siglist(X509, other))
    efivar(tmp_path, "MokNew", SHIM_LOCK, siglist(X509, ours))
    (tmp_path / "sys/kernel/security").mkdir(parents=True)
    (tmp_path / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/keys").write_text(
        "1e9f0bc2 I------     1 perm 1f010000     0     0 asymmetri Debian Secure Boot CA: "
        "6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa 5b8ac1c2 []\n"
        "0b1ac0a1 I------     1 perm 1f0b0000     0     0 keyring   .machine: 1\n")
    state = read_state(Layout(sysroot=tmp_path))
    assert (state.efi, state.secure_boot, state.lockdown, state.enforcing) == (True, True, "integrity", True)
    assert state.kernel_keys == ("Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1",)
    assert state.trust(ours) is Trust.pending
    assert state.trust(other) is Trust.trusted
    assert state.trust(b"0\x82stranger") is Trust.untrusted
    assert state.trust(b"x", "Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1") is Trust.trusted


def test_shim_s_mok_variables_table_is_preferred(tmp_path: Path) -> None:
    ours = b"0\x82our-cert"
    efivar(tmp_path, "SecureBoot", EFI_GLOBAL, b"\x01")
    mok = tmp_path / "sys/firmware/efi/mok-variables"
    mok.mkdir(parents=True)
    (mok / "MokListRT").write_bytes(siglist(X509, ours))  # no attribute word here
    assert read_state(Layout(sysroot=tmp_path)).trust(ours) is Trust.trusted


def test_secure_boot_off_and_no_efi(tmp_path: Path) -> None:
    efivar(tmp_path, "SecureBoot", EFI_GLOBAL, b"\x00")
    state = read_state(Layout(sysroot=tmp_path))
    assert state.secure_boot is False and state.trust(b"anything") is Trust.not_needed
    bios = tmp_path / "bios"
    (bios / "sys/firmware").mkdir(parents=True)
    (bios / "sys/module/module/parameters").mkdir(parents=True)
    (bios / "sys/module/module/parameters/sig_enforce").write_text("Y\n")
    state = read_state(Layout(sysroot=bios))
    assert (state.efi, state.secure_boot, state.sig_enforce) == (False, False, True)
    assert state.trust(b"anything") is Trust.untrusted, "module.sig_enforce=1 refuses unknown keys"
    assert State().trust(b"x") is Trust.unknown, "nothing readable: nothing known"
