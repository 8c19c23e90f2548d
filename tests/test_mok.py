"""``dkms mok status|enroll``, and what install, status --json, plan and the event summary
say about Secure Boot: on a sandbox root whose efivars say Secure Boot is on (this VM has no
EFI), with real certificates, real signed modules and a stand-in for mokutil (which writes
the MokNew variable as mokutil --import does; firmware variables cannot be written here)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel

from dkms_hooks.model import x509
from dkms_hooks.model.secureboot import EFI_GLOBAL, SHIM_LOCK

X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le
MODULE = "dkms_hooks_example"

FAKE_MOKUTIL = """#!{python}
# mokutil --import CERT: the request lands in MokNew, as a signature list
import os, struct, sys, uuid
with open(os.environ["MOKUTIL_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("MOKUTIL_FAIL"):
    sys.exit(int(os.environ["MOKUTIL_FAIL"]))
der = open(sys.argv[2], "rb").read()
owner = uuid.UUID("{shim}").bytes_le
body = owner + der
data = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le + struct.pack("<III", 28 + len(body), 0, len(body))
path = os.path.join(os.environ["DKMS_HOOKS_SYSROOT"], "sys/firmware/efi/efivars", "MokNew-{shim}")
with open(path, "wb") as f:
    f.write(struct.pack("<I", 7) + data + body)
print("input password:")
"""


def secure_boot_on(sandbox: Sandbox) -> Path:
    efivars = sandbox.root / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True, exist_ok=True)
    (efivars / f"SecureBoot-{EFI_GLOBAL}").write_bytes(struct.pack("<I", 6) + b"\x01")
    return efivars


def enrol_for_real(sandbox: Sandbox, cert: Path) -> None:
    """What shim does at the next boot once MokManager confirmed: MokNew becomes MokListRT."""
    efivars = secure_boot_on(sandbox)
    der = x509.parse(cert.read_bytes()).der
    body = uuid.UUID(SHIM_LOCK).bytes_le + der
    data = X509 + struct.pack("<III", 28 + len(body), 0, len(body)) + body
    (efivars / f"MokListRT-{SHIM_LOCK}").write_bytes(struct.pack("<I", 6) + data)
    (efivars / f"MokNew-{SHIM_LOCK}").unlink(missing_ok=True)


def mokutil_on_path(sandbox: Sandbox, tmp_path: Path) -> Path:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / "mokutil"
    tool.write_text(FAKE_MOKUTIL.format(python=sys.executable, shim=SHIM_LOCK))
    tool.chmod(0o755)
    log = tmp_path / "mokutil.log"
    sandbox.env["PATH"] = f"{bindir}:{sandbox.env['PATH']}"
    sandbox.env["MOKUTIL_LOG"] = str(log)
    return log


def path_without(tool: str, tmp_path: Path, path: str) -> str:
    """PATH's commands, ``tool`` left out (as on a machine without it)."""
    bindir = tmp_path / f"without-{tool}"
    bindir.mkdir()
    for d in path.split(":"):
        for entry in sorted(Path(d).glob("*")) if Path(d).is_dir() else ():
            if entry.name != tool and not (bindir / entry.name).exists():
                (bindir / entry.name).symlink_to(entry)
    return str(bindir)


def mok_json(sandbox: Sandbox) -> dict:  # type: ignore[type-arg]
    res = sandbox.dkms("mok", "status", "--json", check=True)
    doc = json.loads(res.stdout)
    assert doc["schema"] == "dkms-hooks/mok" and doc["version"] == 1
    return doc  # type: ignore[no-any-return]


def test_enrol_through_mokutil_and_see_it_pending_then_enrolled(sandbox: Sandbox, tmp_path: Path) -> None:
    secure_boot_on(sandbox)
    cert = sandbox.dkms_tree / "mok.pub"
    res = sandbox.dkms("mok", "status", check=True)
    assert "Secure Boot: on\n" in res.stdout and f"Signing certificate: {cert}\n" in res.stdout
    assert "not there yet" in res.stdout
    before = sandbox.snapshot()
    res = sandbox.dkms("mok", "enroll", env={"PATH": path_without("mokutil", tmp_path, sandbox.env["PATH"])})
    assert res.returncode == 1 and "mokutil not found" in res.stderr, res.output
    assert sandbox.snapshot() == before, "no pair is made for an enrolment that cannot happen"

    log = mokutil_on_path(sandbox, tmp_path)
    res = sandbox.dkms("mok", "enroll", check=True)
    assert "generating self signed certificate for MOK" in res.stdout
    assert log.read_text() == f"--import {cert}\n"
    assert "MokManager" in res.stdout
    res = sandbox.dkms("mok", "status", check=True)
    assert "  enrolled: pending: confirm it in MokManager at the next boot\n" in res.stdout
    doc = mok_json(sandbox)
    assert doc["secure_boot"] is True and doc["certificate"]["trust"] == "pending"
    assert doc["pending"][0]["key_id"] == doc["certificate"]["key_id"]
    assert doc["certificate"]["ca"] and doc["certificate"]["key_usage"] == ["keyCertSign"]

    res = sandbox.dkms("mok", "enroll", check=True)
    assert "already pending" in res.stdout and log.read_text().count("--import") == 1

    enrol_for_real(sandbox, cert)
    assert "  enrolled: yes\n" in sandbox.dkms("mok", "status", check=True).stdout
    assert mok_json(sandbox)["certificate"]["trust"] == "trusted"
    res = sandbox.dkms("mok", "enroll", check=True)
    assert "already enrolled" in res.stdout and log.read_text().count("--import") == 1


def test_a_pem_certificate_is_enrolled_as_der_and_failures_are_reported(sandbox: Sandbox, tmp_path: Path) -> None:
    secure_boot_on(sandbox)
    log = mokutil_on_path(sandbox, tmp_path)
    key, pem = tmp_path / "fleet.key", tmp_path / "fleet.pem"
    subprocess.run(["openssl", "req", "-new", "-x509", "-nodes", "-days", "30", "-subj", "/CN=fleet",
                    "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(pem)], check=True, capture_output=True)
    (sandbox.etc / "framework.conf").write_text(f"mok_signing_key={key}\nmok_certificate={pem}\n")
    res = sandbox.dkms("mok", "status", check=True)
    assert "  fleet, key id " in res.stdout and "  enrolled: no\n" in res.stdout
    assert "Enrol it: dkms mok enroll" in res.stdout
    sandbox.dkms("mok", "enroll", check=True)
    imported = log.read_text().split()[1]
    assert imported != str(pem)
    assert mok_json(sandbox)["certificate"]["trust"] == "pending", "the DER of the PEM file was imported"

    (sandbox.root / f"sys/firmware/efi/efivars/MokNew-{SHIM_LOCK}").unlink()
    res = sandbox.dkms("mok", "enroll", env={"MOKUTIL_FAIL": "3"})
    assert res.returncode == 3 and f"mokutil --import {pem} failed (exit 3)." in res.stderr

    pem.write_text("not a certificate\n")
    res = sandbox.dkms("mok", "enroll")
    assert res.returncode == 1 and f"{pem} is not a certificate" in res.stderr
    assert "not a certificate" in sandbox.dkms("mok", "status", check=True).stdout


def _pair(directory: Path, key: str, cert: str, *extensions: str) -> Path:
    (directory / key).parent.mkdir(parents=True, exist_ok=True)
    (directory / cert).parent.mkdir(parents=True, exist_ok=True)
    ext = [a for e in extensions for a in ("-addext", e)]
    subprocess.run(["openssl", "req", "-new", "-x509", "-nodes", "-days", "30", "-subj", f"/CN={Path(cert).name}", "-newkey",
                    "rsa:2048", "-keyout", str(directory / key), "-outform", "DER", "-out", str(directory / cert),
                    *ext], check=True, capture_output=True)
    return directory / cert


@pytest.mark.parametrize("distro", ["fedora", "ubuntu", "debian"])
def test_each_distribution_s_key_and_kernels_that_refuse_it(sandbox: Sandbox, distro: str) -> None:
    (sandbox.root / "etc/os-release").write_text(f"ID={distro}\n")
    root = sandbox.root
    # upstream's shape of certificate (codeSigning only) at each distribution's place
    if distro == "fedora":
        cert = _pair(root, "etc/pki/akmods/private/private_key.priv", "etc/pki/akmods/certs/public_key.der",
                     "extendedKeyUsage=codeSigning")
    elif distro == "ubuntu":
        cert = _pair(root, "var/lib/shim-signed/mok/MOK.priv", "var/lib/shim-signed/mok/MOK.der",
                     "extendedKeyUsage=codeSigning")
    else:
        cert = _pair(sandbox.dkms_tree, "mok.key", "mok.pub", "extendedKeyUsage=codeSigning")
    # a kernel without headers, built with the CA rule for its machine keyring, and one without
    for kver, config in (("7.0.0-ca", "CONFIG_INTEGRITY_MACHINE_KEYRING=y\nCONFIG_INTEGRITY_CA_MACHINE_KEYRING=y\n"),
                         ("6.1.0-plain", "CONFIG_INTEGRITY_MACHINE_KEYRING=y\n")):
        (sandbox.install_tree / kver).mkdir(parents=True)
        (root / f"boot/config-{kver}").write_text(config)
    res = sandbox.dkms("mok", "status", check=True)
    assert f"Signing certificate: {cert}\n" in res.stdout, res.stdout
    assert ("  kernel 7.0.0-ca: refuses it: kernels built with CONFIG_INTEGRITY_CA_MACHINE_KEYRING keep it out of "
            ".machine: its keyUsage lacks keyCertSign\n") in res.stdout
    assert "  kernel 6.1.0-plain: accepts it\n" in res.stdout
    kernels = mok_json(sandbox)["certificate"]["kernels"]
    assert [(k["kernel"], k["accepts"]) for k in kernels] == [("7.0.0-ca", False), ("6.1.0-plain", True)]


def test_bad_mok_commands(sandbox: Sandbox) -> None:
    for args, message in ((("mok",), "No mok action given."), (("mok", "frob"), "Unknown mok action: 'frob'."),
                          (("mok", "enroll", "--json"), "does not support --json"),
                          (("mok", "status", "extra"), "Unknown mok action")):
        res = sandbox.dkms(*args)
        assert res.returncode == 2 and message in res.stderr, res.output


def test_without_efi_nothing_is_enforced_or_enrolled(sandbox: Sandbox, tmp_path: Path) -> None:
    (sandbox.root / "sys/firmware").mkdir(parents=True)
    sandbox.dkms("generate_mok", check=True)
    res = sandbox.dkms("mok", "status", check=True)
    assert "Secure Boot: off\n" in res.stdout and "Module signatures enforced: no\n" in res.stdout
    assert "  enrolled: no (not needed: module signatures are not enforced)\n" in res.stdout
    assert "Enrol it" not in res.stdout
    log = mokutil_on_path(sandbox, tmp_path)
    res = sandbox.dkms("mok", "enroll")
    assert res.returncode == 1 and "does not boot with EFI" in res.stderr and not log.exists()


def _loads(sandbox: Sandbox, kver: str) -> dict:  # type: ignore[type-arg]
    doc = json.loads(sandbox.dkms("status", "--json", check=True).stdout)
    [entry] = [e for e in doc["entries"] if e["kernel"] == kver]
    [mod] = entry["modules"]
    return mod  # type: ignore[no-any-return]


@pytest.mark.kernel
@needs_kernel
def test_install_status_plan_and_events_say_whether_modules_will_load(sandbox: Sandbox, tmp_path: Path) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    secure_boot_on(sandbox)
    sandbox.dkms("add", f"{MODULE}/1.0", check=True)
    cert = sandbox.dkms_tree / "mok.pub"
    res = sandbox.dkms("plan", "-k", k, check=True)
    assert (f"  signing with {cert}: new builds load: no (its certificate is made by the first signed build, "
            "not enrolled then)\n") in res.stdout
    res = sandbox.dkms("install", f"{MODULE}/1.0", "-k", k, check=True)
    assert (f"Warning: Secure Boot is on, and the certificate that signed the modules built for {k} ({cert}) "
            "is not enrolled: they will not load. Enrol it with dkms mok enroll "
            f"(that is: mokutil --import {cert}), then confirm it in MokManager at the next boot.\n") in res.stderr

    mod = _loads(sandbox, k)
    sig_key = subprocess.run(["modinfo", "-F", "sig_key", mod["installed"]], capture_output=True, text=True,
                             check=False).stdout.strip()
    assert mod["signer"] == "DKMS module signing key" and mod["sig_key"] == sig_key
    assert mod["loads"] == {"verdict": "no", "why": "its certificate is not enrolled"}
    res = sandbox.dkms("plan", "-k", k, check=True)
    assert f"  signing with {cert}: new builds load: no (its certificate is not enrolled)\n" in res.stdout
    assert (f"    {MODULE}: signed by DKMS module signing key; loads: no (its certificate is not enrolled)\n"
            in res.stdout)

    # an event's summary says it too; the transaction succeeds all the same
    sandbox.dkms("unbuild", f"{MODULE}/1.0", "-k", k, check=True)
    res = sandbox.event("apt", "headers-postinst", k)
    assert res.returncode == 0 and f"  installed  {MODULE}/1.0, {k} (" in res.stdout, res.output
    assert (f"  warning: Secure Boot is on, and the certificate that signed the modules built for {k} ({cert}) "
            "is not enrolled: they will not load. Enrol it with dkms mok enroll") in res.stdout

    log = mokutil_on_path(sandbox, tmp_path)
    sandbox.dkms("mok", "enroll", check=True)
    assert log.read_text() == f"--import {cert}\n"
    assert _loads(sandbox, k)["loads"]["verdict"] == "after reboot"
    # a rebuild while the enrolment waits: no warning, a reminder
    sandbox.dkms("unbuild", f"{MODULE}/1.0", "-k", k, check=True)
    res = sandbox.event("apt", "headers-postinst", k)
    assert res.returncode == 0 and f"  installed  {MODULE}/1.0, {k} (" in res.stdout, res.output
    assert f"  warning: the enrolment of {cert}, which signed the modules built for {k}, is pending" in res.stdout

    enrol_for_real(sandbox, cert)
    assert _loads(sandbox, k)["loads"] == {"verdict": "yes", "why": "its certificate is enrolled (MokList)"}
    plan = json.loads(sandbox.dkms("plan", "-k", k, "--json", check=True).stdout)
    assert plan["kernels"][0]["signing"]["trust"] == "trusted"
    [entry] = [e for e in plan["entries"] if e["module"] == MODULE]
    assert entry["modules"][0]["loads"]["verdict"] == "yes"
    sandbox.dkms("unbuild", f"{MODULE}/1.0", "-k", k, check=True)
    res = sandbox.dkms("install", f"{MODULE}/1.0", "-k", k, check=True)
    assert "Secure Boot" not in res.stderr, "an enrolled certificate needs no word"

    # an unsigned build where signatures are enforced will not load
    (sandbox.etc / "framework.conf").write_text("try_sign_modules=false\n")
    sandbox.dkms("unbuild", f"{MODULE}/1.0", "-k", k, check=True)
    res = sandbox.dkms("install", f"{MODULE}/1.0", "-k", k, check=True)
    assert (f"Warning: Secure Boot is on, and the modules built for {k} are not signed: they will not load."
            in res.stderr)
    assert _loads(sandbox, k)["loads"] == {"verdict": "no", "why": "unsigned, and module signatures are enforced"}
    # and plan says what a build would do: leave them unsigned, and why
    plan = json.loads(sandbox.dkms("plan", "-k", k, "--json", check=True).stdout)
    assert plan["kernels"][0]["signing"] == {
        "certificate": str(cert), "present": True, "unsigned": "Module signing is disabled by policy",
        "trust": "trusted", "loads": {"verdict": "no", "why": "unsigned, and module signatures are enforced"}}
    res = sandbox.dkms("plan", "-k", k, check=True)
    assert ("  new builds are not signed (Module signing is disabled by policy): they load: no (unsigned, and "
            "module signatures are enforced)\n") in res.stdout
