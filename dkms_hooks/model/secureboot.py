"""What the running system says about Secure Boot, read-only, from the files under the
injected root (efivars, shim's MOK variables, the kernel's lockdown, /proc/keys): whether
Secure Boot is on, whether the kernel enforces module signatures, and whether a given
certificate is trusted now (enrolled in MokListRT, or loaded into a trusted keyring) or
will be after the next boot (pending in MokNew)."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model.paths import Layout
from dkms_hooks.system.compat import StrEnum

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"
#: EFI_CERT_X509_GUID, as it is laid out in a signature list
_X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le


def signature_list_certs(data: bytes) -> list[bytes]:
    """The X.509 certificates (DER) in a run of EFI_SIGNATURE_LISTs (MokListRT, MokNew, db)."""
    out = []
    at = 0
    while at + 28 <= len(data):
        kind = data[at:at + 16]
        list_size, header_size, sig_size = struct.unpack_from("<III", data, at + 16)
        if list_size < 28 or at + list_size > len(data) or sig_size <= 16:
            break
        entries = at + 28 + header_size
        end = at + list_size
        if kind == _X509:
            for e in range(entries, end - sig_size + 1, sig_size):
                out.append(data[e + 16:e + sig_size])  # after the owner's GUID
        at = end
    return out


class Trust(StrEnum):
    """Whether the running kernel (or the next boot) accepts modules signed with a key."""

    #: Secure Boot is off and the kernel does not enforce signatures: any module loads
    not_needed = "not needed"
    #: the certificate is enrolled (MokListRT) or in one of the kernel's trusted keyrings
    trusted = "trusted"
    #: enrolment requested (MokNew): trusted after the next boot, once confirmed in MokManager
    pending = "pending"
    #: Secure Boot or signature enforcement is on and the key is not trusted: modules are refused
    untrusted = "untrusted"
    #: not an EFI system, or its variables cannot be read here
    unknown = "unknown"


@dataclass(frozen=True)
class State:
    efi: bool = False
    #: None: not known (no EFI, or the variable cannot be read)
    secure_boot: bool | None = None
    #: shim's own validation turned off with `mokutil --disable-validation`
    shim_validation_off: bool = False
    #: "none", "integrity", "confidentiality", or "" when the kernel does not say
    lockdown: str = ""
    #: module.sig_enforce (None: not known)
    sig_enforce: bool | None = None
    enrolled: tuple[bytes, ...] = ()
    pending: tuple[bytes, ...] = ()
    #: descriptions of the asymmetric keys the kernel holds ("CN: keyid")
    kernel_keys: tuple[str, ...] = ()

    @property
    def enforcing(self) -> bool:
        """Whether an unsigned module, or one signed by an unknown key, is refused."""
        return bool(self.secure_boot) or bool(self.sig_enforce) or self.lockdown in ("integrity", "confidentiality")

    def trust(self, cert_der: bytes, kernel_key: str = "") -> Trust:
        """``kernel_key``: the certificate's description as the kernel shows it ("CN: keyid")."""
        if cert_der in self.enrolled or (kernel_key and kernel_key in self.kernel_keys):
            return Trust.trusted
        if cert_der in self.pending:
            return Trust.pending
        if self.enforcing:
            return Trust.untrusted
        if self.secure_boot is None and self.sig_enforce is None and not self.lockdown:
            return Trust.unknown
        return Trust.not_needed


def _efivar(layout: Layout, name: str, guid: str) -> bytes | None:
    """A variable's data: from shim's mok-variables table (no attribute word) or from
    efivarfs (after its four attribute bytes)."""
    if guid == SHIM_LOCK:
        try:
            return (layout.sysroot / "sys/firmware/efi/mok-variables" / name).read_bytes()
        except OSError:
            pass
    try:
        return (layout.sysroot / "sys/firmware/efi/efivars" / f"{name}-{guid}").read_bytes()[4:]
    except OSError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def read_state(layout: Layout) -> State:
    root = layout.sysroot
    efi = (root / "sys/firmware/efi").is_dir()
    sb = _efivar(layout, "SecureBoot", EFI_GLOBAL)
    secure_boot: bool | None
    if sb is not None:
        secure_boot = bool(sb[:1] == b"\x01")
    elif efi:
        # firmware without the variable has no Secure Boot; unreadable variables say nothing
        secure_boot = False if _efivars_readable(layout) else None
    else:
        # booted without EFI (sysfs there to say so): no Secure Boot
        secure_boot = False if (root / "sys/firmware").is_dir() else None
    validation = _efivar(layout, "MokSBStateRT", SHIM_LOCK)
    text = _read(root / "sys/kernel/security/lockdown") or ""
    lockdown = next((w[1:-1] for w in text.split() if w.startswith("[")), "")
    enforce = _read(root / "sys/module/module/parameters/sig_enforce")
    keys = []
    for line in (_read(root / "proc/keys") or "").splitlines():
        fields = line.split(None, 8)
        if len(fields) == 9 and fields[7] == "asymmetri":
            keys.append(fields[8].rsplit(": X509.", 1)[0])
    return State(
        efi=efi,
        secure_boot=secure_boot,
        shim_validation_off=bool(validation and validation[0]),
        lockdown=lockdown,
        sig_enforce=None if enforce is None else enforce.strip() == "Y",
        enrolled=tuple(signature_list_certs(_efivar(layout, "MokListRT", SHIM_LOCK) or b"")),
        pending=tuple(signature_list_certs(_efivar(layout, "MokNew", SHIM_LOCK) or b"")),
        kernel_keys=tuple(keys),
    )


def _efivars_readable(layout: Layout) -> bool:
    try:
        return any((layout.sysroot / "sys/firmware/efi/efivars").iterdir())
    except OSError:
        return False
