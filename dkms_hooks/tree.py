"""Read the state of the dkms tree: which module/version pairs exist, and for which
kernels each is built or installed. Pure reads of the filesystem, no dkms.conf needed."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.paths import Layout

#: status globs only kernel directories that start with digits and a dot
_KERNEL_DIR = re.compile(r"^[0-9]+\..*")


class State(enum.StrEnum):
    added = "added"
    built = "built"
    installed = "installed"
    broken = "broken"


@dataclass(frozen=True)
class Entry:
    state: State
    module: str
    version: str
    kver: str = ""
    arch: str = ""


def _sorted_names(path: Path) -> list[str]:
    try:
        names = [n for n in os.listdir(path) if not n.startswith(".")]
    except OSError:
        return []
    return sorted(names, key=lambda s: s.encode("utf-8", "surrogateescape"))


def is_broken(layout: Layout, module: str, version: str) -> bool:
    if not module or not version:
        return False
    vdir = layout.version_dir(module, version)
    if not vdir.is_dir():
        return False
    src = vdir / "source"
    if src.is_symlink() and not src.is_dir():
        return True
    return not src.is_symlink() and layout.source_dir(module, version).is_dir()


def is_added(layout: Layout, module: str, version: str) -> bool:
    if not module or not version:
        return False
    src = layout.source_link(module, version)
    return layout.version_dir(module, version).is_dir() and src.is_symlink() and src.is_dir()


def is_built(layout: Layout, module: str, version: str, kver: str, arch: str) -> bool:
    if not (module and version and kver and arch):
        return False
    return (layout.built_dir(module, version, kver, arch) / "module").is_dir()


def is_active(layout: Layout, module: str, version: str, kver: str, arch: str) -> bool:
    """The kernel-<kver>-<arch> link names this version (upstream's _is_module_installed)."""
    if not (module and version and kver and arch):
        return False
    link = layout.active_link(module, kver, arch)
    try:
        target = os.readlink(link)
    except OSError:
        return False
    if target == f"{version}/{kver}/{arch}":
        return True  # what dkms writes; anything else is compared the long way
    return os.path.realpath(link) == os.path.realpath(layout.built_dir(module, version, kver, arch))


def is_installed(layout: Layout, module: str, version: str, kver: str, arch: str) -> bool:
    return is_built(layout, module, version, kver, arch) and is_active(layout, module, version, kver, arch)


def module_versions(layout: Layout, module: str = "", version: str = "") -> list[tuple[str, str]]:
    """Every module/version directory, sorted as a shell glob sorts them."""
    pairs = []
    modules = [module] if module else _sorted_names(layout.dkms_tree)
    for m in modules:
        mdir = layout.dkms_tree / m
        versions = [version] if version else _sorted_names(mdir)
        for v in versions:
            if re.fullmatch(r"kernel-.*-.*", v):
                continue
            if (mdir / v).is_dir():
                pairs.append((m, v))
    return pairs


def built_entries(layout: Layout, module: str, version: str, kver: str = "", arch: str = "") -> list[Entry]:
    vdir = layout.version_dir(module, version)
    entries = []
    kvers = [kver] if kver else [k for k in _sorted_names(vdir) if _KERNEL_DIR.match(k)]
    for k in kvers:
        arches = [arch] if arch else _sorted_names(vdir / k)
        for a in arches:
            if not is_built(layout, module, version, k, a):
                continue
            state = State.installed if is_active(layout, module, version, k, a) else State.built
            entries.append(Entry(state, module, version, k, a))
    return entries


def status_entries(
    layout: Layout, module: str = "", version: str = "", kver: str = "", arch: str = ""
) -> list[Entry]:
    """Upstream's module_status: broken, added, or one entry per built kernel/arch."""
    out: list[Entry] = []
    for m, v in module_versions(layout, module, version):
        if is_broken(layout, m, v):
            out.append(Entry(State.broken, m, v))
            continue
        if not is_added(layout, m, v):
            continue
        built = built_entries(layout, m, v, kver, arch)
        out.extend(built or [Entry(State.added, m, v)])
    return out
