"""Arch Linux: alpm hooks with NeedsTargets. Targets arrive on stdin without a leading
slash: usr/src/<name>-<version>/dkms.conf for module sources, usr/lib/modules/<kver>/...
for kernels and their headers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.adapters import registration_of
from dkms_hooks.events import Event, EventKind
from dkms_hooks.paths import Layout

_KERNEL = re.compile(r"^usr/lib/modules/([^/]+)/")
_SOURCE = re.compile(r"^usr/src/([^/]+)/dkms\.conf$")


def parse_targets(text: str, layout: Layout) -> tuple[list[str], list[str]]:
    kernels: list[str] = []
    sources: list[str] = []
    for line in text.splitlines():
        target = line.strip().lstrip("/")
        if m := _SOURCE.match(target):
            sources.append(str(layout.source_tree / m.group(1)))
        elif m := _KERNEL.match(target):
            if m.group(1) not in kernels:
                kernels.append(m.group(1))
    return kernels, sources


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "pacman":
        return None
    verb = argv[0] if argv else ""
    kernels, sources = parse_targets(stdin.read(), layout)
    if verb == "install":
        if sources and not kernels:
            return Event(EventKind.source_added, modules=tuple(sources), source=source)
        return Event(EventKind.kernel_added, tuple(kernels), modules=tuple(sources), source=source)
    if verb == "remove":
        if kernels:
            return Event(EventKind.kernel_removed, tuple(kernels), source=source)
        names = [r for s in sources if (r := registration_of(s))]
        return Event(EventKind.source_removed, modules=tuple(names), source=source)
    return Event(EventKind.nothing, source=source)
