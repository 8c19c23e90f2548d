"""``dkms mok status [--json]`` and ``dkms mok enroll`` (ours): whether the certificate dkms
signs with is trusted by this machine's firmware and kernels, and its enrolment through
mokutil, whose one-time password prompt and MokManager confirmation stay as they are."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dkms_hooks.model import x509
from dkms_hooks.model.context import Context
from dkms_hooks.model.kernel import KConfig, version_sort_key
from dkms_hooks.model.secureboot import Trust, machine_keyring_refusal
from dkms_hooks.ops import secureboot, signing
from dkms_hooks.system import run
from dkms_hooks.system.errors import DkmsError

USAGE = "Usage: dkms mok status [--json] | dkms mok enroll"
SCHEMA = "dkms-hooks/mok"
VERSION = 1

_TRUST_TEXT = {
    Trust.trusted: "yes",
    Trust.pending: "pending: confirm it in MokManager at the next boot",
    Trust.untrusted: "no",
    Trust.not_needed: "no (not needed: module signatures are not enforced)",
    Trust.unknown: "unknown (the EFI variables cannot be read here)",
}


def _kernels(ctx: Context, running: str) -> list[tuple[str, KConfig]]:
    """The kernels asked for with -k, else every kernel in the install tree and the running
    one, each with its configuration (those without one are left out)."""
    arch = ctx.options.arches[0] if ctx.options.arches else os.uname().machine
    names = set(ctx.options.kernels)
    if not names:
        try:
            names = {p.name for p in ctx.layout.install_tree.iterdir() if p.is_dir()}
        except OSError:
            names = set()
        if running:
            names.add(running)
    out = []
    for k in sorted(names, key=version_sort_key, reverse=True):
        kconfig = secureboot.kernel_config(ctx, ctx.kernel(k, arch))
        if kconfig is not None:
            out.append((k, kconfig))
    return out


def _describe(cert: x509.Certificate) -> dict[str, object]:
    return {"subject": cert.subject, "key_id": cert.key_id, "ca": cert.ca,
            "key_usage": sorted(cert.key_usage) if cert.key_usage is not None else None,
            "code_signing": x509.CODE_SIGNING in cert.extended_usage}


def _listed(ders: tuple[bytes, ...]) -> list[dict[str, object]]:
    out = []
    for der in ders:
        try:
            out.append(_describe(x509.parse(der)))
        except ValueError:
            out.append({"subject": None, "key_id": None, "unreadable": True})
    return out


def document(ctx: Context) -> dict[str, object]:
    _key, path = secureboot.signing_pair(ctx, None)
    found = secureboot.survey(ctx, [path])
    state = found.state
    cert = secureboot.load_certificate(path)
    doc: dict[str, object] = {
        "schema": SCHEMA, "version": VERSION,
        "efi": state.efi, "secure_boot": state.secure_boot, "lockdown": state.lockdown or None,
        "sig_enforce": state.sig_enforce, "enforcing": state.enforcing,
        "shim_validation": None if not state.efi else not state.shim_validation_off,
        "running_kernel": state.running or None,
        "enrolled": _listed(state.enrolled),
        "pending": _listed(state.pending),
        "certificate": None,
    }
    if cert is None:
        doc["certificate"] = {"path": os.fspath(path), "present": path.is_file(), "valid": False}
        return doc
    kernels = []
    for kver, kconfig in _kernels(ctx, state.running):
        refused = machine_keyring_refusal(cert, kconfig)
        kernels.append({"kernel": kver, "accepts": refused is None, "why": refused})
    keyring = state.in_kernel(cert)
    doc["certificate"] = {"path": os.fspath(path), "present": True, "valid": True, **_describe(cert),
                          "trust": state.trust(cert).value, "kernel_keyring": keyring, "kernels": kernels}
    return doc


def _status(ctx: Context) -> int:
    doc = document(ctx)
    if ctx.options.json:
        ctx.console.print(json.dumps(doc, indent=2))
        return 0
    out = ctx.console.print
    sb = doc["secure_boot"]
    if sb is None:
        out("Secure Boot: unknown (no EFI variables readable here)")
    else:
        shim = "" if doc["shim_validation"] is not False else " (shim validation disabled)"
        out(f"Secure Boot: {'on' if sb else 'off'}{shim}")
    out(f"Kernel lockdown: {doc['lockdown'] or 'not reported'}")
    enforced = "yes" if doc["enforcing"] else "no"
    out(f"Module signatures enforced: {enforced}" + (" (module.sig_enforce)" if doc["sig_enforce"] else ""))
    cert = doc["certificate"]
    assert isinstance(cert, dict)
    out(f"Signing certificate: {cert['path']}")
    if not cert["valid"]:
        out("  not there yet: the first signed build makes it (or: dkms generate_mok)" if not cert["present"]
            else "  not a certificate (PEM or DER)")
        return 0
    usage = ", ".join(cert["key_usage"]) if cert["key_usage"] is not None else "no keyUsage"
    out(f"  {cert['subject']}, key id {cert['key_id']}")
    out(f"  CA:{'TRUE' if cert['ca'] else 'FALSE'}; key usage: {usage}"
        + ("; extended: codeSigning" if cert["code_signing"] else ""))
    trust = Trust(cert["trust"])
    out(f"  enrolled: {_TRUST_TEXT[trust]}")
    if doc["running_kernel"]:
        keyring = cert["kernel_keyring"]
        held = f"its key is in {keyring or 'a trusted keyring'}" if keyring is not None else "its key is not loaded"
        out(f"  running kernel {doc['running_kernel']}: {held}")
    for k in cert["kernels"]:
        out(f"  kernel {k['kernel']}: " + ("accepts it" if k["accepts"] else f"refuses it: {k['why']}"))
    if trust is Trust.untrusted:
        out("")
        out(f"Its modules will not load. Enrol it: dkms mok enroll (mokutil --import {cert['path']}),")
        out("then reboot and confirm the enrolment in MokManager.")
    return 0


def _enroll(ctx: Context) -> int:
    _key, path = secureboot.signing_pair(ctx, None)
    cert = secureboot.load_certificate(path)
    if path.is_file() and cert is None:
        raise DkmsError(1, f"{path} is not a certificate (PEM or DER): nothing to enrol.")
    state = secureboot.survey(ctx).state
    if not state.efi:
        raise DkmsError(1, "This system does not boot with EFI: there is no MOK list to enrol a certificate into.")
    if cert is not None:
        if cert.der in state.enrolled:
            ctx.console.print(f"{path} is already enrolled.")
            return 0
        if cert.der in state.pending:
            ctx.console.print(f"The enrolment of {path} is already pending: reboot and confirm it in MokManager.")
            return 0
    tool = run.which("mokutil", ctx.env)
    if tool is None:
        raise DkmsError(1, "mokutil not found: install it (Debian, Ubuntu, Fedora, Arch: the mokutil package).")
    if cert is None:
        # none yet: made as the first signed build would make it
        if signing.prepare_mok(ctx, signing.read_signing_settings(ctx, None), None) is None:
            raise DkmsError(1, f"No signing certificate at {path}, and none could be made.")
        cert = secureboot.load_certificate(path)
        if cert is None:
            raise DkmsError(1, f"No signing certificate at {path}, and none could be made.")
    with tempfile.TemporaryDirectory(prefix="dkms-mok-") as tmp:
        der = path
        if path.read_bytes() != cert.der:  # mokutil takes DER only
            der = Path(tmp, "certificate.der")
            der.write_bytes(cert.der)
        ctx.console.print(f"Enrolling {path} with mokutil; it asks for a one-time password, which MokManager "
                          "asks for again at the next boot to confirm the enrolment.")
        res = run.run([tool, "--import", der], stdin=None, stdout=None, env=ctx.env)
    if res.returncode != 0:
        raise DkmsError(res.returncode, f"mokutil --import {path} failed (exit {res.returncode}).")
    ctx.console.print('Reboot, and in MokManager choose "Enroll MOK", "Continue", "Yes", and give the password.')
    return 0


def run_mok(ctx: Context) -> int:
    o = ctx.options
    what = o.positional[0] if o.positional else ""
    if what not in ("status", "enroll") or len(o.positional) > 1:
        raise DkmsError(2, f"Unknown mok action: {what!r}." if what else "No mok action given.", USAGE)
    if what == "enroll":
        if o.json:
            raise DkmsError(2, "dkms mok enroll does not support --json.")
        return _enroll(ctx)
    return _status(ctx)
