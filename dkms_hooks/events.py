"""What a host hook tells the engine: something happened to a kernel or a module source."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventKind(enum.StrEnum):
    kernel_added = "kernel-added"
    kernel_removed = "kernel-removed"
    headers_added = "headers-added"
    source_added = "source-added"
    source_removed = "source-removed"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    #: the kernels concerned; empty means every kernel with headers
    kernels: tuple[str, ...] = ()
    #: the module sources concerned (module/version); empty means every one
    modules: tuple[str, ...] = ()
    source: str = ""
