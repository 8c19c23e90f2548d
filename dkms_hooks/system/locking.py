"""One dkms process at a time on a tree: an exclusive flock on the tree directory itself.

Locking the directory writes nothing into the tree. The kernel drops a flock when its
holder dies (the descriptor is close-on-exec, so no child keeps it), so a stale lock
cannot block anyone; /proc/locks tells a waiting process who holds it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from dkms_hooks.system.console import Console


def lock_holder(path: Path) -> str:
    """The pid holding a flock on ``path``, from /proc/locks, or "unknown"."""
    try:
        st = os.stat(path)
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; a waiter's line carries "->"
            if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
                continue
            if fields[5] == wanted:
                return _describe(fields[4])
    except OSError:
        pass
    return "unknown"


def _describe(pid: str) -> str:
    """``1234 (dkms install foo/1.0)``: the command from the kernel's view of the process,
    never from a file a holder could have left behind."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid
    words = [os.fsdecode(a) for a in argv if a]
    # python -m dkms_hooks ... / .../bin/dkms ...: show it as dkms with its verb and arguments
    for i, w in enumerate(words):
        if w in ("dkms_hooks", "dkms_hooks.cli.main") or os.path.basename(w) in ("dkms", "dkms-hooks"):
            words = ["dkms", *_without_trees(words[i + 1:])]
            break
    text = " ".join(words)
    return f"{pid} ({text[:200]})" if text else pid


def _without_trees(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in ("--dkmstree", "--sourcetree", "--installtree"):
            skip = True
        elif not a.startswith(("--dkmstree=", "--sourcetree=", "--installtree=")):
            out.append(a)
    return out


@contextlib.contextmanager
def tree_lock(path: Path, console: Console) -> Iterator[None]:
    """Hold the lock on the dkms tree at ``path``, saying on ``console`` when it waits."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        # no tree we may create or open: the verb itself will say so
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.eprint(f"dkms: waiting for {path}, locked by process {lock_holder(path)}")
            start = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            console.eprint(f"dkms: got {path} after {time.monotonic() - start:.1f}s")
        yield
    finally:
        os.close(fd)
