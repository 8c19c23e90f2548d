"""One dkms process at a time on a tree: an exclusive flock on a file in the tree.

The lock file records the holder's pid so a waiting process can say who it waits for;
the kernel drops a flock when its holder dies, so a stale lock cannot block anyone."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from dkms_hooks.context import Context


@contextlib.contextmanager
def tree_lock(ctx: Context) -> Iterator[None]:
    path = ctx.layout.lock_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        # no tree we may write to: the verb itself will say so
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            ctx.console.eprint(f"dkms: waiting for the lock on {ctx.layout.dkms_tree} (held by pid {holder})")
            start = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            ctx.console.eprint(f"dkms: got the lock after {time.monotonic() - start:.1f}s")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
