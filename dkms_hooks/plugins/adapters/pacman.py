"""Arch Linux: alpm hooks with NeedsTargets. Targets arrive on stdin without a leading
slash: usr/src/<dir>/dkms.conf for module sources, usr/lib/modules/<kver>/... for kernels
and their headers. One hook call can carry both (``pacman -R linux linux-headers foo-dkms``).

Like Arch's own dkms hook, a module package's source is built for every kernel with
headers whether or not its dkms.conf asks for AUTOINSTALL."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.model.events import Event, Source
from dkms_hooks.model.paths import Layout
from dkms_hooks.plugins.adapters import plain_name

_KERNEL = re.compile(r"^usr/lib/modules/([^/]+)/")
_SOURCE = re.compile(r"^usr/src/([^/]+)/dkms\.conf$")


def parse_targets(text: str, layout: Layout) -> tuple[list[str], list[str], list[str]]:
    """Kernels, module source directories, and the targets refused (with why)."""
    kernels: list[str] = []
    sources: list[str] = []
    refused: list[str] = []
    for line in text.splitlines():
        target = line.strip()
        if not target:
            continue
        rel = target.lstrip("/")
        m = _SOURCE.match(rel)
        k = _KERNEL.match(rel)
        if m and plain_name(m.group(1)):
            path = str(layout.source_tree / m.group(1))
            if path not in sources:
                sources.append(path)
        elif k and plain_name(k.group(1)) and not m:
            if k.group(1) not in kernels:
                kernels.append(k.group(1))
        else:
            refused.append(f"pacman target {target!r} is neither a module source (usr/src/NAME/dkms.conf) "
                           "nor a kernel (usr/lib/modules/KVER/...)")
    return kernels, sources, refused


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "pacman":
        return None
    verb = argv[0] if argv else ""
    if verb not in ("install", "remove"):
        return Event(source=source, refused=(f"unknown pacman hook verb {verb!r} (install or remove)",))
    kernels, sources, refused = parse_targets(stdin.read(), layout)
    if verb == "install":
        return Event(kernels_added=tuple(kernels), sources_added=tuple(map(Source.at, sources)), build_added_always=True,
                     refused=tuple(refused), source=source)
    return Event(kernels_removed=tuple(kernels), sources_removed=tuple(map(Source.at, sources)), refused=tuple(refused),
                 source=source)
