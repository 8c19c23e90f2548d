"""What a host hook tells the engine: something happened to kernels or module sources."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventKind(enum.StrEnum):
    kernel_added = "kernel-added"
    #: a kernel of the same version is about to be installed again: drop what was built for it
    kernel_reinstalling = "kernel-reinstalling"
    kernel_removed = "kernel-removed"
    headers_added = "headers-added"
    source_added = "source-added"
    source_removed = "source-removed"
    #: run the work queued during a package manager transaction
    flush = "flush"
    nothing = "nothing"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    #: the kernels concerned; empty means every kernel that has headers
    kernels: tuple[str, ...] = ()
    #: module sources concerned, as "name/version", or source directories
    modules: tuple[str, ...] = ()
    #: which adapter produced it (for messages)
    source: str = ""
    #: the host builds the initramfs itself right after this event (kernel-install's later
    #: plugins, Debian's postinst.d/initramfs-tools): do not build it twice
    initramfs_follows: bool = False
    #: a package manager transaction is running and will flush queued work at its end
    defer: bool = False
