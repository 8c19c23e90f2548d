"""The running kernel's keyrings, read with the keyctl(2) system call: which keys a keyring
holds is not in /proc/keys, and keyutils' keyctl(1) is rarely installed."""

from __future__ import annotations

import os
import sys

_KEYCTL_READ = 11
#: keyctl's system call number per machine (asm/unistd.h)
_SYSCALL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "loongarch64": 219, "ppc64le": 271,
            "ppc64": 271, "s390x": 280, "i686": 288, "i386": 288, "armv7l": 311}


def members(keyring: int) -> list[int] | None:
    """The serials of the keys ``keyring`` links to, or None when the kernel does not let us
    read it (or this machine's call number is not known)."""
    number = _SYSCALL.get(os.uname().machine)
    if number is None:
        return None
    import ctypes  # lazy: only when the keyrings are asked about

    libc = ctypes.CDLL(None, use_errno=True)
    size = 4096
    while True:
        buf = ctypes.create_string_buffer(size)
        got = libc.syscall(ctypes.c_long(number), ctypes.c_long(_KEYCTL_READ), ctypes.c_long(keyring),
                           buf, ctypes.c_long(size))
        if got < 0:
            return None
        if got <= size:
            raw = buf.raw[:got]
            return [int.from_bytes(raw[i:i + 4], sys.byteorder, signed=True) for i in range(0, len(raw) - 3, 4)]
        size = got

