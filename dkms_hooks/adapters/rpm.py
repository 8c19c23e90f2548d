"""RPM: %post/%preun helpers for module source packages and file triggers on /usr/src
(matching paths on stdin, absolute). New kernels arrive through kernel-install."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.adapters import registration_of
from dkms_hooks.events import Event, EventKind
from dkms_hooks.paths import Layout


def _source_dirs(text: str, layout: Layout) -> list[str]:
    dirs: list[str] = []
    root = str(layout.source_tree).rstrip("/") + "/"
    for line in text.splitlines():
        path = line.strip()
        if not path.startswith(root):
            continue
        top = root + path[len(root):].split("/", 1)[0]
        if top not in dirs and top != root:
            dirs.append(top)
    return dirs


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "rpm":
        return None
    verb = argv[0] if argv else ""
    rest = list(argv[1:])
    if verb in ("post", "posttrans") and len(rest) >= 2:
        # posttrans: after an upgrade, the old version's files are gone; the engine drops
        # registrations whose source vanished when it adds the new one
        return Event(EventKind.source_added, modules=(f"{rest[0]}/{rest[1]}",), source=source)
    if verb == "preun" and len(rest) >= 2:
        # $1 of %preun: 0 on erase, 1 on upgrade (the new version's %post already ran)
        if len(rest) >= 3 and rest[2] not in ("0", ""):
            return Event(EventKind.nothing, source=source)
        return Event(EventKind.source_removed, modules=(f"{rest[0]}/{rest[1]}",), source=source)
    if verb == "filetrigger-in":
        dirs = [d for d in _source_dirs(stdin.read(), layout)]
        return Event(EventKind.source_added, modules=tuple(dirs), source=source)
    if verb == "filetrigger-un":
        names = [r for d in _source_dirs(stdin.read(), layout) if (r := registration_of(d))]
        return Event(EventKind.source_removed, modules=tuple(names), source=source)
    return Event(EventKind.nothing, source=source)
