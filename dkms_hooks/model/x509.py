"""Just enough DER to answer Secure Boot's questions without a process per file: a
certificate's names, serial, key identifier and the extensions the kernel's keyrings look at
(basicConstraints, keyUsage), and who signed a module (the PKCS#7 signer that sign-file
appends). Anything malformed raises ``ValueError``."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

MODULE_SIG_MAGIC = b"~Module signature appended~\n"
#: struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 sig_len
_MODULE_SIG = struct.Struct(">BBBBB3xI")
_PKCS7 = 2
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)

_CN, _O, _EMAIL = "2.5.4.3", "2.5.4.10", "1.2.840.113549.1.9.1"
_SKID, _KEY_USAGE, _BASIC, _EKU = "2.5.29.14", "2.5.29.15", "2.5.29.19", "2.5.29.37"
CODE_SIGNING = "1.3.6.1.5.5.7.3.3"
#: keyUsage bit names, in the order of the BIT STRING (RFC 5280, 4.2.1.3)
KEY_USAGE_BITS = ("digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
                  "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly")


@dataclass(frozen=True)
class _Tlv:
    tag: int
    body: bytes
    raw: bytes  # tag, length and body, as they were encoded


def _read(data: bytes, at: int = 0) -> tuple[_Tlv, int]:
    if at + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[at], data[at + 1]
    start = at + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated DER")
    return _Tlv(tag, data[start:end], data[at:end]), end


def _items(body: bytes) -> list[_Tlv]:
    out = []
    at = 0
    while at < len(body):
        tlv, at = _read(body, at)
        out.append(tlv)
    return out


def _oid(body: bytes) -> str:
    if not body:
        raise ValueError("empty OID")
    parts = [min(body[0] // 40, 2)]
    parts.append(body[0] - 40 * parts[0])
    value = 0
    for b in body[1:]:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _name(body: bytes) -> dict[str, str]:
    """A Name's attributes (the first of each type), as text."""
    out: dict[str, str] = {}
    for rdn in _items(body):
        for attr in _items(rdn.body):
            oid, value = _items(attr.body)[:2]
            out.setdefault(_oid(oid.body), value.body.decode("utf-8", errors="replace"))
    return out


def kernel_name(attrs: dict[str, str]) -> str:
    """The name the kernel gives a certificate's subject in key descriptions: the CN, or
    "O: CN" when the CN does not already start with the organisation."""
    cn, o = attrs.get(_CN, ""), attrs.get(_O, "")
    if cn and o:
        if cn.startswith(o) or (len(cn) >= 7 and len(o) >= 7 and cn[:7] == o[:7]):
            return cn
        return f"{o}: {cn}"
    return cn or o or attrs.get(_EMAIL, "")


@dataclass(frozen=True)
class Certificate:
    der: bytes
    subject: str
    issuer: str
    issuer_der: bytes
    serial: bytes
    skid: bytes | None
    ca: bool
    #: None: no keyUsage extension (the kernel then sets no usage flag at all)
    key_usage: frozenset[str] | None
    extended_usage: tuple[str, ...]

    @property
    def key_id(self) -> str:
        """The identifier the kernel appends to the key's description."""
        return (self.skid if self.skid is not None else self.serial).hex()

    @property
    def kernel_description(self) -> str:
        return f"{self.subject}: {self.key_id}"

    def as_signer(self) -> Signer:
        """The signer sign-file records for a module it signs with this certificate."""
        return Signer(_name(_read(self.issuer_der)[0].body).get(_CN, ""), self.issuer_der, self.serial, None)

    def describe(self) -> str:
        usage = ", ".join(sorted(self.key_usage)) if self.key_usage is not None else "no keyUsage"
        return f"CA:{'TRUE' if self.ca else 'FALSE'}, {usage}"


def der_prefix(data: bytes) -> bytes:
    """The DER element at the start of ``data``, without what pads it (entries of an EFI
    signature list share one size); ``data`` as it is when it does not start with one."""
    try:
        return _read(data)[0].raw
    except ValueError:
        return data


def der_of(data: bytes) -> bytes:
    """A certificate file's DER bytes, whether it holds PEM or DER."""
    m = _PEM.search(data)
    if m is None:
        return data
    try:
        return base64.b64decode(b"".join(m.group(1).split()), validate=True)
    except binascii.Error as e:
        raise ValueError(f"bad PEM: {e}") from None


def pem_of(der: bytes) -> bytes:
    text = base64.encodebytes(der).replace(b"\n", b"")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def parse(data: bytes) -> Certificate:
    try:
        return _parse(der_of(data))
    except (IndexError, UnicodeError) as e:
        raise ValueError(f"not an X.509 certificate ({e})") from None


def _parse(der: bytes) -> Certificate:
    cert, _ = _read(der)
    tbs = _items(_items(cert.body)[0].body)
    if tbs and tbs[0].tag == 0xA0:  # [0] version
        tbs = tbs[1:]
    if len(tbs) < 6:
        raise ValueError("not an X.509 certificate")
    serial, issuer, subject = tbs[0].body, tbs[2], tbs[4]
    skid: bytes | None = None
    ca = False
    usage: frozenset[str] | None = None
    eku: tuple[str, ...] = ()
    for ext_block in (t for t in tbs[6:] if t.tag == 0xA3):
        for ext in _items(_items(ext_block.body)[0].body):
            parts = _items(ext.body)
            oid, value = _oid(parts[0].body), parts[-1].body
            if oid == _SKID:
                skid = _read(value)[0].body
            elif oid == _BASIC:
                fields = _items(_read(value)[0].body)
                ca = bool(fields) and fields[0].tag == 0x01 and fields[0].body != b"\x00"
            elif oid == _KEY_USAGE:
                bits = _read(value)[0].body[1:]
                usage = frozenset(n for i, n in enumerate(KEY_USAGE_BITS)
                                  if i // 8 < len(bits) and bits[i // 8] & (0x80 >> (i % 8)))
            elif oid == _EKU:
                eku = tuple(_oid(t.body) for t in _items(_read(value)[0].body))
    return Certificate(der, kernel_name(_name(subject.body)), kernel_name(_name(issuer.body)), issuer.raw,
                       serial, skid, ca, usage, eku)


@dataclass(frozen=True)
class Signer:
    """Who signed a module: the issuer and serial of the signing certificate, or its key
    identifier (sign-file -k)."""

    issuer: str
    issuer_der: bytes
    serial: bytes
    skid: bytes | None

    @property
    def key_id(self) -> str:
        """As modinfo prints ``sig_key``: the serial (or key identifier) in colon-separated hex."""
        raw = self.skid if self.skid is not None else self.serial
        return ":".join(f"{b:02X}" for b in raw)

    def made_by(self, cert: Certificate) -> bool:
        if self.skid is not None:
            return cert.skid == self.skid
        return cert.issuer_der == self.issuer_der and cert.serial == self.serial


def pkcs7_signer(pkcs7: bytes) -> Signer:
    """The first SignerInfo's identity in a PKCS#7/CMS SignedData."""
    try:
        return _pkcs7_signer(pkcs7)
    except IndexError as e:
        raise ValueError(f"not a PKCS#7 signature ({e})") from None


def _pkcs7_signer(pkcs7: bytes) -> Signer:
    content_info = _items(_read(pkcs7)[0].body)
    signed = _items(_items(content_info[1].body)[0].body)
    infos = [t for t in signed if t.tag == 0x31][-1]  # signerInfos, after digestAlgorithms
    sid = _items(_items(infos.body)[0].body)[1]
    if sid.tag == 0x80:  # [0] subjectKeyIdentifier
        return Signer("", b"", b"", sid.body)
    issuer, serial = _items(sid.body)[:2]
    # modinfo names the signer by the issuer's common name alone
    return Signer(_name(issuer.body).get(_CN, ""), issuer.raw, serial.body, None)


def split_module(data: bytes) -> tuple[bytes, bytes] | None:
    """A module's bytes and its appended PKCS#7 signature, or None when it carries none."""
    if not data.endswith(MODULE_SIG_MAGIC):
        return None
    end = len(data) - len(MODULE_SIG_MAGIC)
    if end < _MODULE_SIG.size:
        return None
    _algo, _hash, id_type, _signer, _key_id, sig_len = _MODULE_SIG.unpack_from(data, end - _MODULE_SIG.size)
    start = end - _MODULE_SIG.size - sig_len
    if id_type != _PKCS7 or start < 0:
        return None
    return data[:start], data[start:end - _MODULE_SIG.size]


def module_signer(data: bytes) -> Signer | None:
    """Who signed the (uncompressed) module, None when it is unsigned or the signature cannot
    be read."""
    parts = split_module(data)
    if parts is None:
        return None
    try:
        return pkcs7_signer(parts[1])
    except ValueError:
        return None
