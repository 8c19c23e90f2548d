"""The boot-time catch-up (dkms-hooks.service, the OpenRC service): ``dkms event boot
[KVER]`` builds and installs what is missing for the running kernel (or KVER), with the
same never-fail policy and summary as a package transaction, within boot_time_limit."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.model.events import Event
from dkms_hooks.model.paths import Layout
from dkms_hooks.plugins.adapters import plain_name


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "boot":
        return None
    kver = argv[0] if argv else os.uname().release
    if not plain_name(kver) or len(argv) > 1:
        return Event(source=source, refused=("usage: dkms event boot [KERNEL-VERSION]",))
    return Event(kernels_added=(kver,), at_boot=True, source=source)
