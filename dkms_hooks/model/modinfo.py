"""Read a kernel module's .modinfo section (version, srcversion, vermagic, signer...) in
Python: status and install compare module versions for every module, and a modinfo(8)
process per module is what makes upstream slow."""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Iterator
from pathlib import Path

from dkms_hooks.system import run


def read_module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        out = run.run_bytes(["zstd", "-dc", "--", path])
        if out is None:
            raise ValueError(f"cannot decompress {path}")
        return out
    return data


def sections(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Name, file offset and size of each section of an ELF image (none if it is not ELF)."""
    if data[:4] != b"\x7fELF":
        return
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is64:
        shoff = struct.unpack_from(endian + "Q", data, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)
    else:
        shoff = struct.unpack_from(endian + "I", data, 0x20)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x2E)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        if is64:
            name, _t, _f, _a, off, size = struct.unpack_from(endian + "IIQQQQ", data, base)
        else:
            name, _t, _f, _a, off, size = struct.unpack_from(endian + "IIIIII", data, base)
        return name, off, size

    _, stroff, strsize = header(shstrndx)
    strtab = data[stroff : stroff + strsize]
    for i in range(shnum):
        name_off, off, size = header(i)
        end = strtab.find(b"\0", name_off)
        yield strtab[name_off:end], off, size


def _section(data: bytes, wanted: bytes) -> bytes | None:
    for name, off, size in sections(data):
        if name == wanted:
            return data[off : off + size]
    return None


def modinfo(path: Path) -> dict[str, list[str]]:
    """The module's key=value pairs; keys may repeat (alias, depends...)."""
    try:
        data = read_module_bytes(path)
        section = _section(data, b".modinfo")
    except (OSError, ValueError, lzma.LZMAError, EOFError, struct.error):
        return {}
    info: dict[str, list[str]] = {}
    if section is None:
        return info
    for item in section.split(b"\0"):
        if b"=" not in item:
            continue
        k, _, v = item.partition(b"=")
        info.setdefault(k.decode(errors="replace"), []).append(v.decode(errors="replace"))
    return info


def first(info: dict[str, list[str]], key: str) -> str:
    vals = info.get(key)
    return vals[0] if vals else ""


def imported_crcs(data: bytes) -> dict[str, int] | None:
    """The CRC the module expects for each symbol it imports (its ``__versions`` section,
    and the extended sections of kernels whose names may be longer), or None when the
    module was built without CONFIG_MODVERSIONS."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    found = {name: data[off:off + size] for name, off, size in sections(data)
             if name in (b"__versions", b"__version_ext_crcs", b"__version_ext_names")}
    if not found:
        return None
    crcs: dict[str, int] = {}
    table = found.get(b"__versions", b"")
    # struct modversion_info: an unsigned long CRC, then the name in what is left of 64 bytes
    width, word = (64, "Q") if is64 else (64, "I")
    skip = struct.calcsize(word)
    for base in range(0, len(table) - width + 1, width):
        (crc,) = struct.unpack_from(endian + word, table, base)
        name = table[base + skip: base + width].split(b"\0", 1)[0]
        crcs[name.decode(errors="replace")] = crc & 0xFFFFFFFF
    names = found.get(b"__version_ext_names", b"").split(b"\0")
    ext = found.get(b"__version_ext_crcs", b"")
    for i, name in enumerate(n for n in names if n):
        if 4 * i + 4 <= len(ext):
            crcs[name.decode(errors="replace")] = struct.unpack_from(endian + "I", ext, 4 * i)[0]
    return crcs


def read_symvers(path: Path) -> dict[str, int]:
    """Symbol -> CRC from a Module.symvers (``0xCRC<TAB>symbol<TAB>module<TAB>export...``)."""
    out: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split("\t", 2)
            if len(parts) >= 2:
                try:
                    out[parts[1]] = int(parts[0], 16)
                except ValueError:
                    continue
    return out
