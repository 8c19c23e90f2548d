"""Debian and Ubuntu: the /etc/kernel/*.d run-parts hooks, the dpkg file trigger on /usr/src,
module source package scripts, and APT's DPkg::Post-Invoke.

Inside an APT run (apt sets DPKG_FRONTEND_LOCKED for dpkg) work that does not have to
happen at once is queued and done in one go by the Post-Invoke step. A new kernel's modules
are built at once: Debian's initramfs hook runs right after ours and must find them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl, tree
from dkms_hooks.events import Event, EventKind
from dkms_hooks.paths import Layout


def _in_apt(env: Mapping[str, str]) -> bool:
    return bool(env.get("DPKG_FRONTEND_LOCKED"))


def rescan_sources(layout: Layout) -> tuple[list[str], list[str]]:
    """Sources in the source tree not registered yet, and registered ones whose source went away."""
    new = []
    try:
        entries = sorted(os.listdir(layout.source_tree))
    except OSError:
        entries = []
    for name in entries:
        path = layout.source_tree / name
        if (path / "dkms.conf").is_file():
            new.append(os.fspath(path))
    gone = [f"{m}/{v}" for m, v in tree.module_versions(layout) if tree.is_broken(layout, m, v)]
    return new, gone


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "apt":
        return None
    verb = argv[0] if argv else ""
    rest = tuple(argv[1:])
    kver = rest[0] if rest else ""
    defer = _in_apt(env)
    if verb == "kernel-postinst" and kver:
        return Event(EventKind.kernel_added, (kver,), source=source, initramfs_follows=True)
    if verb == "kernel-preinst" and kver:
        return Event(EventKind.kernel_reinstalling, (kver,), source=source)
    if verb == "kernel-prerm" and kver:
        return Event(EventKind.kernel_removed, (kver,), source=source)
    if verb == "headers-postinst" and kver:
        return Event(EventKind.headers_added, (kver,), source=source, defer=defer)
    if verb == "source-configure" and len(rest) >= 2:
        return Event(EventKind.source_added, modules=(f"{rest[0]}/{rest[1]}",), source=source, defer=defer)
    if verb == "source-remove" and len(rest) >= 2:
        return Event(EventKind.source_removed, modules=(f"{rest[0]}/{rest[1]}",), source=source)
    if verb == "trigger":
        new, gone = rescan_sources(layout)
        if gone:
            return Event(EventKind.source_removed, modules=tuple(gone), source=source)
        return Event(EventKind.source_added, modules=tuple(new), source=source, defer=defer)
    if verb == "post-invoke":
        return Event(EventKind.flush, source=source)
    return Event(EventKind.nothing, source=source)
