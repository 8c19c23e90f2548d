"""What the running system says about Secure Boot, read-only, from the files under the
injected root (efivars, shim's MOK variables, the kernel's lockdown, /proc/keys): whether
Secure Boot is on, whether the kernel enforces module signatures, and whether a given
certificate is trusted now (enrolled in MokListRT, or loaded into a trusted keyring) or
will be after the next boot (pending in MokNew)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model import x509
from dkms_hooks.model.kernel import KConfig
from dkms_hooks.model.paths import Layout
from dkms_hooks.system import keyctl
from dkms_hooks.system.compat import StrEnum

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"
#: EFI_CERT_X509_GUID (a5c059a1-94e4-4aa7-87b5-ab155c2bf072), as a signature list lays it out
_X509 = b'\xa1Y\xc0\xa5\xe4\x94\xa7J\x87\xb5\xab\x15\\+\xf0r'


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
                out.append(x509.der_prefix(data[e + 16:e + sig_size]))  # after the owner's GUID
        at = end
    return out


#: keyrings whose keys vouch for modules: the built-in and secondary ones, the machine keyring
#: (MOKs, linked to the secondary one), and the platform keyring (firmware db and MOKs on
#: kernels without a machine keyring), which Debian's, Ubuntu's and Fedora's kernels also
#: check modules against
MODULE_KEYRINGS = (".builtin_trusted_keys", ".secondary_trusted_keys", ".machine", ".platform")


class Trust(StrEnum):
    """Whether modules signed with a key load."""

    #: Secure Boot is off and nothing enforces signatures: any module loads
    not_needed = "not needed"
    #: enrolled (MokListRT) or in one of the kernel's trusted keyrings
    trusted = "trusted"
    #: enrolment requested (MokNew): trusted after the next boot, once confirmed in MokManager
    pending = "pending"
    #: signatures are enforced and the key is not trusted: its modules are refused
    untrusted = "untrusted"
    #: not an EFI system, or its variables cannot be read here
    unknown = "unknown"


@dataclass(frozen=True)
class KernelKey:
    #: as the kernel describes it: "<subject>: <key id>"
    description: str
    #: the trusted keyring holding it ("" when the keyrings could not be read)
    keyring: str = ""


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
    #: the asymmetric keys the running kernel holds
    kernel_keys: tuple[KernelKey, ...] = ()
    #: the running kernel's release ("" when not known)
    running: str = ""

    @property
    def enforcing(self) -> bool:
        """Whether an unsigned module, or one signed by an unknown key, is refused."""
        return bool(self.secure_boot) or bool(self.sig_enforce) or self.lockdown in ("integrity", "confidentiality")

    @property
    def known(self) -> bool:
        return not (self.secure_boot is None and self.sig_enforce is None and not self.lockdown)

    def in_kernel(self, cert: x509.Certificate) -> str | None:
        """The trusted keyring of the running kernel that holds the certificate's key ("" when
        it is there but the keyring is not known), or None."""
        for k in self.kernel_keys:
            if k.description == cert.kernel_description and k.keyring in ("", *MODULE_KEYRINGS):
                return k.keyring
        return None

    def trust(self, cert: x509.Certificate) -> Trust:
        """The key's standing on this machine: in the running kernel, enrolled, pending."""
        if self.in_kernel(cert) is not None or cert.der in self.enrolled:
            return Trust.trusted
        if cert.der in self.pending:
            return Trust.pending
        if self.enforcing:
            return Trust.untrusted
        return Trust.not_needed if self.known else Trust.unknown


def machine_keyring_refusal(cert: x509.Certificate, kconfig: KConfig) -> str | None:
    """Why a kernel built with ``kconfig`` keeps the enrolled certificate out of its .machine
    keyring (the kernel's restrict_link_by_ca), or None when it lets it in."""
    if kconfig.get("CONFIG_INTEGRITY_MACHINE_KEYRING") != "y" or kconfig.get(
            "CONFIG_INTEGRITY_CA_MACHINE_KEYRING") != "y":
        return None
    usage = cert.key_usage or frozenset()
    why = ""
    if not cert.ca:
        why = "it is not a CA certificate (basicConstraints CA:TRUE)"
    elif "keyCertSign" not in usage:
        why = "its keyUsage lacks keyCertSign"
    elif kconfig.get("CONFIG_INTEGRITY_CA_MACHINE_KEYRING_MAX") == "y" and "digitalSignature" in usage:
        why = "its keyUsage has digitalSignature, which CONFIG_INTEGRITY_CA_MACHINE_KEYRING_MAX refuses"
    return f"kernels built with CONFIG_INTEGRITY_CA_MACHINE_KEYRING keep it out of .machine: {why}" if why else None


class Load(StrEnum):
    """Whether a module will load in a kernel."""

    yes = "yes"
    #: once the pending enrolment is confirmed in MokManager at the next boot
    after_reboot = "after reboot"
    no = "no"
    unknown = "unknown"


@dataclass(frozen=True)
class Verdict:
    load: Load
    why: str


def will_load(state: State, signer: x509.Signer | None, certs: Sequence[x509.Certificate],
              kver: str, kconfig: KConfig) -> Verdict:
    """Whether a module signed by ``signer`` (None: unsigned) loads in kernel ``kver``, built
    with ``kconfig``, on this machine; ``certs`` are the certificates that may have signed it
    (enrolled, pending, configured)."""
    running = bool(kver) and kver == state.running
    enforced = state.enforcing or kconfig.get("CONFIG_MODULE_SIG_FORCE") == "y"
    if not enforced:
        if not state.known:
            return Verdict(Load.unknown, "the Secure Boot state cannot be read here")
        return Verdict(Load.yes, "module signatures are not enforced")
    if signer is None:
        return Verdict(Load.no, "unsigned, and module signatures are enforced")
    cert = next((c for c in certs if signer.made_by(c)), None)
    if cert is None:
        return Verdict(Load.unknown, f"signed by a key this host has no certificate of ({signer.key_id})")
    refused = machine_keyring_refusal(cert, kconfig)
    if running and state.kernel_keys:
        keyring = state.in_kernel(cert)
        if keyring is not None:
            return Verdict(Load.yes, f"its key is in the running kernel's {keyring or 'keyrings'}")
        if cert.der in state.enrolled:
            return Verdict(Load.no, refused or "enrolled, but the running kernel did not take its key")
    if cert.der in state.enrolled:
        if refused:
            return Verdict(Load.no, f"enrolled, but {refused}")
        return Verdict(Load.yes, "its certificate is enrolled (MokList)")
    if cert.der in state.pending:
        return Verdict(Load.after_reboot, "enrolment pending: confirm it in MokManager at the next boot")
    return Verdict(Load.no, "its certificate is not enrolled")


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


def _efivars_readable(layout: Layout) -> bool:
    try:
        return any((layout.sysroot / "sys/firmware/efi/efivars").iterdir())
    except OSError:
        return False


def _kernel_keys(proc_keys: str, members: Callable[[int], list[int] | None]) -> tuple[KernelKey, ...]:
    """The asymmetric keys of /proc/keys, each with the trusted keyring that links to it."""
    keys: dict[int, str] = {}
    rings: dict[int, str] = {}
    for line in proc_keys.splitlines():
        fields = line.split(None, 8)
        if len(fields) != 9:
            continue
        try:
            serial = int(fields[0], 16)
        except ValueError:
            continue
        if fields[7] == "asymmetri":
            keys[serial] = fields[8].rsplit(": X509.", 1)[0]
        elif fields[7] == "keyring" and fields[8].split(":", 1)[0] in MODULE_KEYRINGS:
            rings[serial] = fields[8].split(":", 1)[0]
    holder: dict[int, str] = {}
    for serial, name in rings.items():
        for member in members(serial) or ():
            holder.setdefault(member, name)
    return tuple(KernelKey(desc, holder.get(serial, "")) for serial, desc in keys.items())


def read_state(layout: Layout, members: Callable[[int], list[int] | None] | None = None) -> State:
    """The machine's state as the files under ``layout.sysroot`` show it. ``members`` reads
    a keyring's keys; by default the running kernel's (only meaningful for the root "/")."""
    root = layout.sysroot
    if members is None:
        members = keyctl.members if root == Path("/") else (lambda serial: None)
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
    return State(
        efi=efi,
        secure_boot=secure_boot,
        shim_validation_off=bool(validation and validation[0]),
        lockdown=lockdown,
        sig_enforce=None if enforce is None else enforce.strip() == "Y",
        enrolled=tuple(signature_list_certs(_efivar(layout, "MokListRT", SHIM_LOCK) or b"")),
        pending=tuple(signature_list_certs(_efivar(layout, "MokNew", SHIM_LOCK) or b"")),
        kernel_keys=_kernel_keys(_read(root / "proc/keys") or "", members),
        running=(_read(root / "proc/sys/kernel/osrelease") or "").strip(),
    )
