"""Gentoo: the eclass's pkg_postinst / pkg_prerm / pkg_config helpers call
``dkms event gentoo postinst|prerm|config NAME VERSION [KVER]``. As Gentoo's dkms eclass,
the package's module is built (for the configured kernel KVER, and every kernel with
headers) whether or not its dkms.conf asks for AUTOINSTALL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.model.events import Event, Source
from dkms_hooks.model.paths import Layout
from dkms_hooks.plugins.adapters import plain_name


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "gentoo":
        return None
    verb = argv[0] if argv else ""
    rest = list(argv[1:])
    if verb not in ("postinst", "config", "prerm"):
        return Event(source=source, refused=(f"unknown gentoo hook verb {verb!r} (postinst, config or prerm)",))
    if len(rest) < 2 or not (plain_name(rest[0]) and plain_name(rest[1])):
        return Event(source=source, refused=(f"gentoo {verb} needs a module NAME and VERSION",))
    nv = (Source.named(rest[0], rest[1]),)
    if verb == "prerm":
        return Event(sources_removed=nv, source=source)
    kernels = (rest[2],) if len(rest) > 2 and plain_name(rest[2]) else ()
    return Event(sources_added=nv, source_kernels=kernels, build_added_always=True, source=source)
