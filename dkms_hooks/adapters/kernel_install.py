"""systemd kernel-install: ``40-dkms-hooks.install add KVER ENTRY_DIR IMAGE [INITRD...]`` and
``remove KVER ENTRY_DIR``. The initrd generators (50-dracut, 50-mkosi...) run after us."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.events import Event, EventKind
from dkms_hooks.paths import Layout


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "kernel-install":
        return None
    command = argv[0] if argv else ""
    kver = argv[1] if len(argv) > 1 else ""
    if command == "add" and kver:
        return Event(EventKind.kernel_added, (kver,), source=source, initramfs_follows=True)
    if command == "remove" and kver:
        return Event(EventKind.kernel_removed, (kver,), source=source)
    # inspect, add-all... are not ours; kernel-install must go on (never exit 77)
    return Event(EventKind.nothing, source=source)
