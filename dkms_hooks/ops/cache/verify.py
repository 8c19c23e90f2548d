"""Checks an entry passes before its modules are used: its files are the ones its manifest
hashed, each module names the kernel in its vermagic, and (with CONFIG_MODVERSIONS) every
symbol it imports carries the CRC this kernel's headers, or a BUILD_DEPENDS module built
for it, export. Whatever fails is a reason; the caller throws the entry away and builds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dkms_hooks.model import modinfo
from dkms_hooks.model.kernel import KernelTarget
from dkms_hooks.ops.cache.key import file_sha256
from dkms_hooks.ops.cache.store import MANIFEST, NAMES, Entry

_symvers_memo: dict[tuple[str, int, int], dict[str, int]] = {}


def symvers(path: Path) -> dict[str, int]:
    """Symbol -> CRC of a Module.symvers, read once per process for each state of the file."""
    st = path.stat()
    memo = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _symvers_memo:
        _symvers_memo[memo] = modinfo.read_symvers(path)
    return _symvers_memo[memo]


def refusal(entry: Entry, kernel: KernelTarget, built_paths: Sequence[str],
            dependency_symvers: Sequence[Path] = ()) -> str | None:
    """Why the entry must not be used for ``kernel`` to provide the modules at
    ``built_paths``, or None when it may."""
    for name, digest in entry.files.items():
        if not NAMES.match(name) or name == MANIFEST:
            return f"its manifest lists a file named {name!r}"
        path = entry.path / name
        try:
            if file_sha256(path) != digest:
                return f"{name} does not match its manifest's hash"
        except OSError:
            return f"{name} is missing"
    listed = set(entry.files)
    if sorted(m.built_path for m in entry.modules) != sorted(built_paths):
        return "it does not hold the modules this build makes"
    for m in entry.modules:
        if m.path.parent != entry.path or m.path.name not in listed:
            return f"{m.path.name} is not in the manifest's hashes"
    modversions = kernel.kconfig().get("CONFIG_MODVERSIONS") == "y"
    known: dict[str, int] = {}
    if modversions:
        kernel_symvers = Path(os.path.realpath(kernel.source_dir)) / "Module.symvers"
        if not kernel_symvers.is_file():
            return f"{kernel_symvers} is missing, so the modules' symbol versions cannot be checked"
        for dep in dependency_symvers:
            known.update(symvers(dep))
        known.update(symvers(kernel_symvers))
    for m in entry.modules:
        release = modinfo.first(modinfo.modinfo(m.path), "vermagic").split(" ", 1)[0]
        if release != kernel.kver:
            return f"{m.built_path}.ko was built for kernel {release or '(no vermagic)'}, not {kernel.kver}"
        if not modversions:
            continue
        try:
            crcs = modinfo.imported_crcs(m.path.read_bytes())
        except (OSError, ValueError) as e:
            return f"{m.built_path}.ko cannot be read: {e}"
        if crcs is None:
            return f"{m.built_path}.ko has no symbol versions, but the kernel has CONFIG_MODVERSIONS"
        for symbol, crc in sorted(crcs.items()):
            if known.get(symbol) != crc:
                have = f"0x{known[symbol]:08x}" if symbol in known else "none"
                return f"{m.built_path}.ko wants {symbol} with CRC 0x{crc:08x}; the kernel has {have}"
    return None
