"""Secure Boot for what dkms signs: the certificate that signs for a kernel, whether this
machine trusts it, whether an installed module will load, and the warning a user needs
before rebooting into modules their firmware will refuse."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model import modinfo, x509
from dkms_hooks.model.context import Context
from dkms_hooks.model.kernel import KConfig, KernelTarget, read_kconfig
from dkms_hooks.model.secureboot import State, Trust, Verdict, machine_keyring_refusal, read_state, will_load
from dkms_hooks.ops import signing


def signing_pair(ctx: Context, kernel: KernelTarget | None) -> tuple[Path, Path]:
    """The key and certificate that sign (or will sign) modules for ``kernel``."""
    key, cert = signing.mok_paths(ctx, signing.read_signing_settings(ctx, kernel), kernel)
    return Path(key), Path(cert)


def kernel_config(ctx: Context, kernel: KernelTarget) -> KConfig | None:
    """The kernel's configuration: its headers', else the one installed beside its image in
    /boot (a kernel without headers: the running one, often); None when neither is there."""
    for path in (kernel.config, ctx.layout.sysroot / f"boot/config-{kernel.kver}"):
        if path.is_file():
            return read_kconfig(path)
    return None


def load_certificate(path: Path) -> x509.Certificate | None:
    try:
        return x509.parse(path.read_bytes())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Survey:
    """The machine's Secure Boot state and every certificate a module's signer is matched
    against: the enrolled and pending ones, and the ones dkms signs with."""

    state: State
    certs: tuple[x509.Certificate, ...]

    def verdict(self, module_file: Path, kernel: KernelTarget) -> tuple[x509.Signer | None, Verdict]:
        try:
            signer = x509.module_signer(modinfo.read_module_bytes(module_file))
        except (OSError, ValueError, EOFError):
            signer = None
        return signer, self.judge(signer, kernel)

    def judge(self, signer: x509.Signer | None, kernel: KernelTarget) -> Verdict:
        return will_load(self.state, signer, self.certs, kernel.kver, kernel.kconfig())


def survey(ctx: Context, signing_certs: Iterable[Path] = ()) -> Survey:
    state = read_state(ctx.layout)
    certs: list[x509.Certificate] = []
    for der in (*state.enrolled, *state.pending):
        try:
            certs.append(x509.parse(der))
        except ValueError:
            continue
    for path in signing_certs:
        cert = load_certificate(path)
        if cert is not None:
            certs.append(cert)
    return Survey(state, tuple(certs))


def enrol_command(cert: Path) -> str:
    return f"dkms mok enroll (that is: mokutil --import {cert})"


def warnings_for(ctx: Context, signed: dict[str, set[str]]) -> list[str]:
    """What to tell the user before the reboot about the certificates that signed modules in
    this run (certificate path, "" for none -> kernels): Secure Boot is on and modules are
    unsigned, or their certificate is neither enrolled nor pending, or a kernel will keep it
    out of its trusted keyring."""
    if not signed:
        return []
    try:
        return _warnings(ctx, signed)
    except (OSError, ValueError):
        return []  # a warning that cannot be worked out must not fail the transaction


def _warnings(ctx: Context, signed: dict[str, set[str]]) -> list[str]:
    state = read_state(ctx.layout)
    if not state.secure_boot:
        return []
    out = []
    for path, kernels in sorted(signed.items()):
        where = ", ".join(sorted(k.split("/", 1)[0] for k in kernels))
        if not path:
            out.append(f"Secure Boot is on, and the modules built for {where} are not signed: they will not load. "
                       "See why above (try_sign_modules, sign_file, the key and certificate).")
            continue
        cert = load_certificate(Path(path))
        if cert is None:
            continue
        trust = state.trust(cert)
        if trust is Trust.untrusted:
            out.append(f"Secure Boot is on, and the certificate that signed the modules built for {where} "
                       f"({path}) is not enrolled: they will not load. Enrol it with {enrol_command(Path(path))}, "
                       "then confirm it in MokManager at the next boot.")
            continue
        if trust is Trust.pending:
            out.append(f"the enrolment of {path}, which signed the modules built for {where}, is pending: "
                       "confirm it in MokManager at the next boot, or they will not load.")
        for target in sorted(kernels):
            kver, _, arch = target.partition("/")
            kconfig = kernel_config(ctx, ctx.kernel(kver, arch))
            refused = machine_keyring_refusal(cert, kconfig) if kconfig is not None else None
            if refused:
                out.append(f"the certificate {path} will not let modules load in {kver}: {refused}. Move the "
                           "pair away (the next signed build makes one kernels accept) and enrol the new one.")
    return out
