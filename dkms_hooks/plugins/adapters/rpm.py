"""RPM: %post/%preun/%posttrans helpers for module source packages and file triggers on
/usr/src (matching paths on stdin, absolute). New kernels arrive through kernel-install.

As upstream's documented %post (dkms add, build, install), what a package brings is built
whether or not its dkms.conf asks for AUTOINSTALL."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.model.events import Event, Source
from dkms_hooks.model.paths import Layout
from dkms_hooks.plugins.adapters import plain_name


def _source_dirs(text: str, layout: Layout, *, need_conf: bool) -> tuple[list[str], list[str]]:
    """The top directories under the source tree that the paths fall in, and the paths
    refused. /usr/src also holds what is not a module source (kernel-devel's
    /usr/src/kernels): a new directory counts only with a dkms.conf in it."""
    dirs: list[str] = []
    refused: list[str] = []
    root = str(layout.source_tree).rstrip("/") + "/"
    for line in text.splitlines():
        path = line.strip()
        if not path:
            continue
        top = path[len(root):].split("/", 1)[0] if path.startswith(root) else ""
        if not plain_name(top):
            if os.path.normpath(path) != root.rstrip("/"):
                refused.append(f"rpm file trigger path {path!r} is not under {root}")
            continue
        if root + top in dirs or (need_conf and not os.path.isfile(root + top + "/dkms.conf")):
            continue
        dirs.append(root + top)
    return dirs, refused


def _name_version(rest: Sequence[str]) -> Source | None:
    if len(rest) >= 2 and plain_name(rest[0]) and plain_name(rest[1]):
        return Source.named(rest[0], rest[1])
    return None


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "rpm":
        return None
    verb = argv[0] if argv else ""
    rest = list(argv[1:])
    if verb in ("post", "posttrans", "preun"):
        nv = _name_version(rest)
        if nv is None:
            return Event(source=source, refused=(f"rpm {verb} needs a module NAME and VERSION",))
        if verb == "preun":
            # $1 of %preun: 0 on erase, 1 on upgrade (the new version's %post already ran)
            if len(rest) >= 3 and rest[2] not in ("0", ""):
                return Event(source=source)
            return Event(sources_removed=(nv,), source=source)
        # posttrans: after an upgrade the old version's files are gone; the engine drops
        # registrations whose source vanished when it adds the new one
        return Event(sources_added=(nv,), build_added_always=True, source=source)
    if verb == "filetrigger-in":
        dirs, refused = _source_dirs(stdin.read(), layout, need_conf=True)
        return Event(sources_added=tuple(map(Source.at, dirs)), build_added_always=True, refused=tuple(refused), source=source)
    if verb == "filetrigger-un":
        dirs, refused = _source_dirs(stdin.read(), layout, need_conf=False)
        return Event(sources_removed=tuple(map(Source.at, dirs)), refused=tuple(refused), source=source)
    return Event(source=source, refused=(f"unknown rpm hook verb {verb!r}",))
