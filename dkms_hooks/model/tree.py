"""Read the state of the dkms tree: which module/version pairs exist, and for which
kernels each is built or installed. Pure reads of the filesystem, no dkms.conf needed."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model.paths import Layout
from dkms_hooks.system.compat import StrEnum

#: status globs only kernel directories that start with digits and a dot
_KERNEL_DIR = re.compile(r"^[0-9]+\..*")


class State(StrEnum):
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


def source_target(layout: Layout, module: str, version: str) -> str | None:
    """Where a registration's ``source`` link points, as an absolute normalised path."""
    link = layout.source_link(module, version)
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return os.path.normpath(os.path.join(link.parent, target))


def registrations_at(layout: Layout, directory: str | Path) -> list[tuple[str, str]]:
    """The registrations whose source is ``directory``: the answer to "which module went
    away with this directory" that never parses its name (``can-dkms-4.1.6-200``)."""
    wanted = os.path.normpath(os.path.join(layout.source_tree, directory))
    found = []
    for m, v in module_versions(layout):
        target = source_target(layout, m, v)
        if target is None:
            continue
        if target == wanted or (os.path.isdir(target) and os.path.isdir(wanted)
                                and os.path.samefile(target, wanted)):
            found.append((m, v))
    return found


def sources_out_of_step(layout: Layout) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """The source tree against the registrations: directories with a dkms.conf that no
    registration comes from, registrations whose source went away, and registrations whose
    dkms.conf is no longer the one they were added with (a package reinstalled the same
    version with other content)."""
    pointed: dict[str, tuple[str, str]] = {}
    gone: list[tuple[str, str]] = []
    changed: list[tuple[str, str]] = []
    for m, v in module_versions(layout):
        target = source_target(layout, m, v)
        if target is None:
            continue
        if not os.path.isdir(target):
            gone.append((m, v))
            continue
        pointed[target] = (m, v)
        saved = layout.saved_conf(m, v)
        try:
            if saved.is_file() and saved.read_bytes() != Path(target, "dkms.conf").read_bytes():
                changed.append((m, v))
        except OSError:
            pass
    new = []
    for name in _sorted_names(layout.source_tree):
        path = os.path.normpath(layout.source_tree / name)
        if path not in pointed and os.path.isfile(os.path.join(path, "dkms.conf")):
            new.append(path)
    return new, gone, changed
