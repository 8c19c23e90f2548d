"""Secure Boot, read-only: a root's efivars, MOK variables, lockdown and /proc/keys (laid out
here as a machine lays them out: this VM boots without EFI), real certificates made by
``dkms generate_mok`` and openssl, real modules signed by Debian and by sign-file, the
kernel's rule for its machine keyring, and the running kernel's keyrings through keyctl."""

from __future__ import annotations

import ctypes
import glob
import lzma
import platform
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms_hooks.model import x509
from dkms_hooks.model.kernel import KConfig
from dkms_hooks.model.paths import Layout
from dkms_hooks.model.secureboot import (
    EFI_GLOBAL,
    SHIM_LOCK,
    Load,
    State,
    Trust,
    machine_keyring_refusal,
    read_state,
    signature_list_certs,
    will_load,
)  # fmt: skip
from dkms_hooks.system import keyctl

X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le
SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328").bytes_le
OWNER = uuid.UUID(SHIM_LOCK).bytes_le
CA = KConfig("CONFIG_INTEGRITY_MACHINE_KEYRING=y\nCONFIG_INTEGRITY_CA_MACHINE_KEYRING=y\n")
CA_MAX = KConfig("CONFIG_INTEGRITY_MACHINE_KEYRING=y\nCONFIG_INTEGRITY_CA_MACHINE_KEYRING=y\n"
                 "CONFIG_INTEGRITY_CA_MACHINE_KEYRING_MAX=y\n")
DEBIAN = KConfig("CONFIG_INTEGRITY_MACHINE_KEYRING=y\n# CONFIG_INTEGRITY_CA_MACHINE_KEYRING is not set\n")
SIGN_FILES = sorted(glob.glob("/usr/lib/linux-kbuild-*/scripts/sign-file"))
DEBIAN_MODULES = sorted(glob.glob("/lib/modules/*/kernel/net/key/af_key.ko.xz"))


def siglist(kind: bytes, *items: bytes) -> bytes:
    size = 16 + max(len(i) for i in items)
    body = b"".join(OWNER + i.ljust(size - 16, b"\0") for i in items)
    return kind + struct.pack("<III", 28 + len(body), 0, size) + body


def efivar(root: Path, name: str, guid: str, data: bytes) -> None:
    d = root / "sys/firmware/efi/efivars"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}-{guid}").write_bytes(struct.pack("<I", 7) + data)


def make_cert(tmp: Path, name: str, *extensions: str) -> tuple[Path, Path]:
    """A key and DER certificate made by openssl with ``extensions`` (-addext)."""
    key, cert = tmp / f"{name}.key", tmp / f"{name}.der"
    ext = [a for e in extensions for a in ("-addext", e)]
    subprocess.run(["openssl", "req", "-new", "-x509", "-nodes", "-days", "30", "-subj", f"/CN={name}",
                    "-newkey", "rsa:2048", "-keyout", str(key), "-outform", "DER", "-out", str(cert), *ext],
                   check=True, capture_output=True)
    return key, cert


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> x509.Certificate:
    """The certificate ``dkms generate_mok`` makes."""
    from conftest import make_sandbox

    sandbox = make_sandbox(tmp_path_factory.mktemp("mok"))
    sandbox.dkms("generate_mok", check=True)
    return x509.parse((sandbox.dkms_tree / "mok.pub").read_bytes())


def test_signature_lists_hold_several_kinds() -> None:
    a, b = b"0\x82cert-a", b"0\x82cert-bb"
    data = siglist(SHA256, b"h" * 32, b"i" * 32) + siglist(X509, a) + siglist(X509, b)
    assert signature_list_certs(data) == [a, b]
    assert signature_list_certs(data[:-3]) == [a], "a truncated list is not read past its end"
    assert signature_list_certs(b"") == []


def test_the_generated_certificate_is_one_every_kernel_accepts(generated: x509.Certificate) -> None:
    assert generated.subject == "DKMS module signing key"
    assert generated.ca and generated.key_usage == frozenset({"keyCertSign"})
    assert x509.CODE_SIGNING in generated.extended_usage
    for kconfig in (CA, CA_MAX, DEBIAN, KConfig("")):
        assert machine_keyring_refusal(generated, kconfig) is None


def test_certificates_a_ca_machine_keyring_refuses(tmp_path: Path) -> None:
    old = x509.parse(make_cert(tmp_path, "old", "extendedKeyUsage=codeSigning")[1].read_bytes())
    ubuntu = x509.parse(make_cert(tmp_path, "ubuntu", "basicConstraints=critical,CA:FALSE",
                                  "extendedKeyUsage=codeSigning")[1].read_bytes())
    digsig = x509.parse(make_cert(tmp_path, "digsig", "basicConstraints=critical,CA:TRUE",
                                  "keyUsage=critical,digitalSignature,keyCertSign")[1].read_bytes())
    no_certsign = x509.parse(make_cert(tmp_path, "nocs", "basicConstraints=critical,CA:TRUE",
                                       "keyUsage=critical,digitalSignature")[1].read_bytes())
    # openssl's default for req -x509 is a CA with no keyUsage
    assert old.ca and old.key_usage is None
    assert "lacks keyCertSign" in (machine_keyring_refusal(old, CA) or "")
    assert "not a CA certificate" in (machine_keyring_refusal(ubuntu, CA) or "")
    assert "lacks keyCertSign" in (machine_keyring_refusal(no_certsign, CA) or "")
    assert machine_keyring_refusal(digsig, CA) is None
    assert "digitalSignature" in (machine_keyring_refusal(digsig, CA_MAX) or "")
    for cert in (old, ubuntu, digsig, no_certsign):
        assert machine_keyring_refusal(cert, DEBIAN) is None, "kernels without the CA rule take any MOK"


def test_certificates_read_as_openssl_reads_them(tmp_path: Path, generated: x509.Certificate) -> None:
    der = tmp_path / "c.der"
    der.write_bytes(generated.der)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der), "-noout", "-serial", "-ext",
                           "subjectKeyIdentifier"], capture_output=True, text=True, check=True).stdout
    serial = text.split("serial=", 1)[1].split()[0]
    skid = text.split("Subject Key Identifier:", 1)[1].split()[0].replace(":", "")
    assert generated.serial.hex().upper().lstrip("0") == serial.lstrip("0")
    assert generated.key_id == skid.lower()
    pem = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der)], capture_output=True,
                         check=True).stdout
    assert x509.parse(pem).der == generated.der
    assert x509.der_of(x509.pem_of(generated.der)) == generated.der


@given(cut=st.integers(min_value=0, max_value=2000), flip=st.integers(min_value=0, max_value=2000))
@settings(max_examples=200, deadline=None)
def test_damaged_certificates_are_refused_with_value_error(generated: x509.Certificate, cut: int,
                                                           flip: int) -> None:
    data = bytearray(generated.der[:cut])
    if data:
        data[flip % len(data)] ^= 0xFF
    try:
        x509.parse(bytes(data))
    except ValueError:
        pass


@pytest.mark.skipif(not (SIGN_FILES and DEBIAN_MODULES), reason="no sign-file or Debian kernel modules here")
def test_module_signers_as_modinfo_names_them(tmp_path: Path, generated: x509.Certificate) -> None:
    debian = tmp_path / "debian.ko"
    debian.write_bytes(lzma.decompress(Path(DEBIAN_MODULES[-1]).read_bytes()))
    key, cert = make_cert(tmp_path, "ours", "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign")
    parts = x509.split_module(debian.read_bytes())
    assert parts is not None
    ours = tmp_path / "ours.ko"
    ours.write_bytes(parts[0])
    subprocess.run([SIGN_FILES[-1], "sha256", str(key), str(cert), str(ours)], check=True)
    for module in (debian, ours):
        info = subprocess.run(["modinfo", "-F", "signer", str(module)], capture_output=True, text=True, check=True).stdout
        sig_key = subprocess.run(["modinfo", "-F", "sig_key", str(module)], capture_output=True, text=True, check=True).stdout
        signer = x509.module_signer(module.read_bytes())
        assert signer is not None
        assert (signer.issuer, signer.key_id) == (info.strip(), sig_key.strip())
    signer = x509.module_signer(ours.read_bytes())
    assert signer is not None and signer.made_by(x509.parse(cert.read_bytes()))
    assert not signer.made_by(generated)
    assert x509.parse(cert.read_bytes()).as_signer() == signer
    assert x509.module_signer(parts[0]) is None


def _machine(root: Path, *, enrolled: list[bytes], pending: list[bytes], keys: list[x509.Certificate]) -> None:
    efivar(root, "SecureBoot", EFI_GLOBAL, b"\x01")
    if enrolled:
        efivar(root, "MokListRT", SHIM_LOCK, siglist(X509, *enrolled))
    if pending:
        efivar(root, "MokNew", SHIM_LOCK, siglist(X509, *pending))
    (root / "sys/kernel/security").mkdir(parents=True)
    (root / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.12.1-amd64\n")
    lines = ["0000aaaa I------     1 perm 1f0b0000     0     0 keyring   .machine: 1",
             "0000bbbb I------     1 perm 1f0b0000     0     0 keyring   .platform: 1"]
    for n, k in enumerate(keys):
        lines.append(f"0000c00{n} I------     1 perm 1f010000     0     0 asymmetri {k.kernel_description}: "
                     "X509.rsa 5b8ac1c2 []")
    (root / "proc/keys").write_text("\n".join(lines) + "\n")


def test_a_secure_boot_machine_enrolled_pending_and_loaded_keys(tmp_path: Path) -> None:
    certs = {n: x509.parse(make_cert(tmp_path, n, "basicConstraints=critical,CA:TRUE",
                                     "keyUsage=critical,keyCertSign")[1].read_bytes())
             for n in ("enrolled", "pending", "stranger", "platform")}
    old = x509.parse(make_cert(tmp_path, "old", "extendedKeyUsage=codeSigning")[1].read_bytes())
    root = tmp_path / "root"
    _machine(root, enrolled=[certs["enrolled"].der, old.der], pending=[certs["pending"].der],
             keys=[certs["enrolled"], certs["platform"]])
    # the kernel linked the enrolled key into .machine and the firmware's into .platform;
    # the old certificate is enrolled but the running kernel did not take it
    links = {0xAAAA: [0xC000], 0xBBBB: [0xC001]}
    state = read_state(Layout(sysroot=root), members=links.get)
    assert (state.efi, state.secure_boot, state.lockdown, state.enforcing) == (True, True, "integrity", True)
    assert state.running == "6.12.1-amd64"
    assert state.in_kernel(certs["enrolled"]) == ".machine"
    assert state.in_kernel(certs["platform"]) == ".platform"
    assert state.trust(certs["enrolled"]) is Trust.trusted
    assert state.trust(certs["pending"]) is Trust.pending
    assert state.trust(certs["stranger"]) is Trust.untrusted
    known = [*certs.values(), old]

    def verdict(name: x509.Certificate | None, kver: str, kconfig: KConfig = DEBIAN) -> Load:
        return will_load(state, name.as_signer() if name else None, known, kver, kconfig).load

    running, next_kernel = "6.12.1-amd64", "6.13.0-amd64"
    assert verdict(certs["enrolled"], running) is Load.yes
    assert verdict(certs["platform"], running) is Load.yes
    assert verdict(old, running) is Load.no, "enrolled, yet not in the running kernel's keyrings"
    assert verdict(certs["pending"], running) is Load.after_reboot
    assert verdict(certs["stranger"], running) is Load.no
    assert verdict(None, running) is Load.no
    assert verdict(old, next_kernel) is Load.yes
    assert verdict(old, next_kernel, CA) is Load.no, "a CA machine keyring keeps it out"
    why = will_load(state, old.as_signer(), known, next_kernel, CA).why
    assert why.startswith("enrolled, but kernels built with CONFIG_INTEGRITY_CA_MACHINE_KEYRING")
    unknown = x509.Signer("someone", b"0\x00", b"\x01", None)
    assert will_load(state, unknown, known, running, DEBIAN).load is Load.unknown
    # read without the keyrings (another root than the running system's): the enrolment decides
    blind = read_state(Layout(sysroot=root))
    assert blind.in_kernel(certs["enrolled"]) == ""
    assert will_load(blind, old.as_signer(), known, running, DEBIAN).load is Load.no


def test_shim_s_mok_variables_table_is_preferred(tmp_path: Path, generated: x509.Certificate) -> None:
    efivar(tmp_path, "SecureBoot", EFI_GLOBAL, b"\x01")
    mok = tmp_path / "sys/firmware/efi/mok-variables"
    mok.mkdir(parents=True)
    (mok / "MokListRT").write_bytes(siglist(X509, generated.der))  # no attribute word here
    assert read_state(Layout(sysroot=tmp_path)).trust(generated) is Trust.trusted


def test_secure_boot_off_and_no_efi(tmp_path: Path, generated: x509.Certificate) -> None:
    efivar(tmp_path, "SecureBoot", EFI_GLOBAL, b"\x00")
    state = read_state(Layout(sysroot=tmp_path))
    assert state.secure_boot is False and state.trust(generated) is Trust.not_needed
    assert will_load(state, None, [], "6.1", DEBIAN).load is Load.yes
    assert will_load(state, None, [], "6.1", KConfig("CONFIG_MODULE_SIG_FORCE=y\n")).load is Load.no
    bios = tmp_path / "bios"
    (bios / "sys/firmware").mkdir(parents=True)
    (bios / "sys/module/module/parameters").mkdir(parents=True)
    (bios / "sys/module/module/parameters/sig_enforce").write_text("Y\n")
    state = read_state(Layout(sysroot=bios))
    assert (state.efi, state.secure_boot, state.sig_enforce) == (False, False, True)
    assert state.trust(generated) is Trust.untrusted, "module.sig_enforce=1 refuses unknown keys"
    assert State().trust(generated) is Trust.unknown, "nothing readable: nothing known"
    assert will_load(State(), None, [], "6.1", DEBIAN).load is Load.unknown


@pytest.mark.skipif(platform.machine() != "x86_64", reason="add_key's call number is x86_64's here")
def test_keyctl_reads_the_running_kernel_s_keyrings() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    session = -3  # KEY_SPEC_SESSION_KEYRING
    serial = libc.syscall(248, b"user", b"dkms-hooks-test", b"payload", 7, session)  # add_key
    assert serial > 0, ctypes.get_errno()
    try:
        members = keyctl.members(session)
        assert members is not None and serial in members
    finally:
        libc.syscall(250, 9, serial)  # KEYCTL_REVOKE
    assert keyctl.members(0x7FFFFFFF) is None, "a keyring that is not there reads as unknown"
