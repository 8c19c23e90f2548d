"""A module's appended signature, checked in user space before the module is installed:
the PKCS#7 that sign-file appends must verify over the module's bytes against one of the
certificates the fleet trusts (openssl cms, with no chain: a MOK is self-signed)."""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dkms_hooks.system import run

MAGIC = b"~Module signature appended~\n"
#: struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 sig_len
_TRAILER = struct.Struct(">BBBBB3xI")
_PKCS7 = 2


def split(data: bytes) -> tuple[bytes, bytes] | None:
    """The module's bytes and its PKCS#7 signature, or None when it carries none."""
    if not data.endswith(MAGIC):
        return None
    end = len(data) - len(MAGIC)
    if end < _TRAILER.size:
        return None
    _algo, _hash, id_type, _signer, _key_id, sig_len = _TRAILER.unpack_from(data, end - _TRAILER.size)
    start = end - _TRAILER.size - sig_len
    if id_type != _PKCS7 or start < 0:
        return None
    return data[:start], data[start:end - _TRAILER.size]


def _pem(cert: Path) -> bytes:
    """The certificate in PEM, whether the file holds PEM or DER (dkms's mok.pub is DER)."""
    raw = cert.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in raw:
        return raw
    res = run.run_bytes(["openssl", "x509", "-inform", "DER", "-outform", "PEM", "-in", cert])
    if not res:
        raise ValueError(f"{cert} is not a certificate (PEM or DER)")
    return res


def certificate_der(cert: Path) -> bytes:
    """The certificate's DER bytes, to compare two certificates whatever their encoding."""
    raw = cert.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in raw:
        return raw
    res = run.run_bytes(["openssl", "x509", "-inform", "PEM", "-outform", "DER", "-in", cert])
    if not res:
        raise ValueError(f"{cert} is not a certificate")
    return res


def trusted_bundle(certs: Sequence[Path], directory: Path) -> Path:
    """The trusted certificates as one PEM file in ``directory``."""
    bundle = directory / "trusted.pem"
    bundle.write_bytes(b"".join(_pem(c) for c in certs))
    return bundle


def refusal(module: Path, bundle: Path) -> str | None:
    """Why the module's signature does not make it trusted, or None when it verifies."""
    parts = split(module.read_bytes())
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
