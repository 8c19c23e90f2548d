"""systemd kernel-install: ``40-dkms-hooks.install add KVER ENTRY_DIR IMAGE [INITRD...]`` and
``remove KVER ENTRY_DIR``. The initrd generators (50-dracut, 50-mkosi...) run after us."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.model.events import Event
from dkms_hooks.model.paths import Layout
from dkms_hooks.plugins.adapters import plain_name


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "kernel-install":
        return None
    command = argv[0] if argv else ""
    kver = argv[1] if len(argv) > 1 else ""
    if command in ("add", "remove") and not plain_name(kver):
        return Event(source=source, refused=(f"kernel-install {command} needs a kernel version, not {kver!r}",))
    if command == "add":
        return Event(kernels_added=(kver,), source=source, initramfs_follows=True)
    if command == "remove":
        return Event(kernels_removed=(kver,), source=source)
    # inspect, add-all... are not ours; kernel-install must go on (never exit 77)
    return Event(source=source)
