"""Where a module's files are and what they hold: the built copy in the dkms tree, the
installed one in the kernel's tree, and whether they match. Read by status and by install."""

from __future__ import annotations

import os
from pathlib import Path

from dkms_hooks.model import modinfo
from dkms_hooks.model.context import Context
from dkms_hooks.model.dkmsconf import BuiltModule
from dkms_hooks.model.kernel import Compression, ver_key

_ALL_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz")


def compressed_or_uncompressed(directory: Path, name: str, compression: Compression) -> Path | None:
    """The module file under ``directory``: uncompressed first, then the kernel's compression.
    Other compressions count too, so a tree whose compression changed is still understood."""
    for suffix in (".ko", ".ko" + compression.suffix, *_ALL_SUFFIXES):
        p = directory / f"{name}{suffix}"
        if p.exists():
            return p
    return None


def find_module(tree_dir: Path, name: str) -> list[Path]:
    found = []
    wanted = {f"{name}.ko", *(f"{name}{s}" for s in _ALL_SUFFIXES)}
    for dirpath, _dirs, files in os.walk(tree_dir):
        for f in files:
            if f in wanted:
                p = Path(dirpath) / f
                if p.is_file() and not p.is_symlink():
                    found.append(p)
    return found


def verinfo(path: Path | None) -> tuple[str, str]:
    if path is None:
        return "", ""
    info = modinfo.modinfo(path)
    words = modinfo.first(info, "version").split()
    ver = words[0] if words else ""
    checksum = words[1] if len(words) > 1 else ""
    return ver, modinfo.first(info, "srcversion") or checksum


def compare_versions(a: Path | None, b: Path | None) -> str:
    """Upstream's compare_module_version: "==", "=", ">" (a newer) or "<"."""
    va, vb = verinfo(a), verinfo(b)
    if va[0] == vb[0]:
        return "==" if va[1] == vb[1] else "="
    return ">" if ver_key(va[0]) > ver_key(vb[0]) else "<"


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def actual_dest_location(ctx: Context, m: BuiltModule, module: str, kver: str, arch: str,
                         compression: Compression) -> str | None:
    """Where the installed copy of module ``m`` really is (the distribution's location or
    the one dkms.conf names), judged by its version."""
    owned = compressed_or_uncompressed(ctx.layout.active_link(module, kver, arch) / "module", m.dest_name,
                                       compression)
    for loc in m.possible_dest_locations():
        installed = compressed_or_uncompressed(Path(f"{ctx.layout.install_tree}/{kver}{loc}"), m.dest_name,
                                               compression)
        if installed is not None and compare_versions(owned, installed) in ("==", "="):
            return loc
    return None
