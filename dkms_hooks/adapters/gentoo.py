"""Gentoo: the eclass's pkg_postinst / pkg_prerm / pkg_config helpers call
``dkms event gentoo postinst|prerm|config NAME VERSION [KVER]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.events import Event, EventKind
from dkms_hooks.paths import Layout


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "gentoo":
        return None
    verb = argv[0] if argv else ""
    rest = list(argv[1:])
    if verb in ("postinst", "config") and len(rest) >= 2:
        kernels = (rest[2],) if len(rest) > 2 and rest[2] else ()
        if kernels:
            return Event(EventKind.kernel_added, kernels, modules=(f"{rest[0]}/{rest[1]}",), source=source)
        return Event(EventKind.source_added, modules=(f"{rest[0]}/{rest[1]}",), source=source)
    if verb == "prerm" and len(rest) >= 2:
        return Event(EventKind.source_removed, modules=(f"{rest[0]}/{rest[1]}",), source=source)
    return Event(EventKind.nothing, source=source)
