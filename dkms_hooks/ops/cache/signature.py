"""A module's appended signature, checked in user space before the module is installed:
the PKCS#7 that sign-file appends must verify over the module's bytes against one of the
certificates the fleet trusts (openssl cms, with no chain: a MOK is self-signed)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dkms_hooks.model import x509
from dkms_hooks.system import run


def certificate_der(cert: Path) -> bytes:
    """The certificate's DER bytes, to compare two certificates whatever their encoding
    (ValueError when the file holds no certificate)."""
    try:
        return x509.parse(cert.read_bytes()).der
    except ValueError as e:
        raise ValueError(f"{cert} is not a certificate (PEM or DER): {e}") from None


def trusted_bundle(certs: Sequence[Path], directory: Path) -> Path:
    """The trusted certificates as one PEM file in ``directory``."""
    bundle = directory / "trusted.pem"
    bundle.write_bytes(b"".join(x509.pem_of(certificate_der(c)) for c in certs))
    return bundle


def refusal(module: Path, bundle: Path) -> str | None:
    """Why the module's signature does not make it trusted, or None when it verifies."""
    parts = x509.split_module(module.read_bytes())
    if parts is None:
        return f"{module.name} is not signed"
    content, signature = parts
    with tempfile.TemporaryDirectory(prefix="dkms-sig-") as tmp:
        sig, body = Path(tmp, "sig.p7"), Path(tmp, "module")
        sig.write_bytes(signature)
        body.write_bytes(content)
        res = run.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", body,
                       "-certfile", bundle, "-nointern", "-noverify", "-out", os.devnull], stderr=run.DEVNULL)
    if res.returncode != 0:
        return f"{module.name} is not signed by a trusted certificate"
    return None
