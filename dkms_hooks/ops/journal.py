"""Crash safety: every change to the trees that takes more than one rename is an operation
whose progress is recorded, step by step, in ``<dkmstree>/.dkms-hooks/journal/``. The next
dkms run (holding the tree lock) finishes or undoes what a killed process left half done
before it does anything else (``recovery.py``).

One file per operation in flight (an autoinstall builds several modules at once), written
whole and renamed into place, so a record is either the old one or the new one.

Every step boundary calls ``boundary()``: ``DKMS_HOOKS_CRASH_AT=<op>.<step>`` makes the
process SIGKILL itself there, and ``DKMS_HOOKS_STEP_LOG=<file>`` lists the boundaries
reached, so tests can stop a verb at each of its steps."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.system.errors import DkmsError

TYPE_CHECKING = False  # see __init__.py
if TYPE_CHECKING:
    from typing import Any

#: the steps of each operation, in order; a record names the last one completed
OPS: dict[str, tuple[str, ...]] = {
    "add": ("begin", "dir-made", "linked"),
    "build": ("begin", "compiled", "staged", "placed", "post-build-done"),
    "install": ("begin", "original-saving", "original-saved", "module-staged", "module-placed", "linked",
                "depmod-done"),
    "uninstall": ("begin", "unlinked", "module-deleted", "originals-restored", "depmod-done"),
    "unbuild": ("begin", "moved-aside"),
    "remove": ("begin", "moved-aside"),
    "ldtarball": ("begin", "source-staged", "source-placed", "built-staged", "built-placed"),
    #: not a verb's operation: a depmod left for later (depmod_owed)
    "depmod": ("owed",),
}

#: the operations each verb goes through, from the state it normally starts in
#: (install: built; autoinstall: added; unbuild and remove: installed)
VERB_OPS: dict[str, tuple[str, ...]] = {
    "build": ("build",),
    "install": ("install",),
    "uninstall": ("uninstall",),
    "unbuild": ("uninstall", "unbuild"),
    "remove": ("uninstall", "unbuild", "remove"),
    "autoinstall": ("build", "install"),
    "ldtarball": ("ldtarball", "add"),
}

#: every step boundary of every verb, as DKMS_HOOKS_CRASH_AT names them
STEPS: dict[str, tuple[str, ...]] = {
    verb: tuple(f"{op}.{step}" for op in ops for step in OPS[op]) for verb, ops in VERB_OPS.items()
}

_counter = itertools.count()
_lock = threading.Lock()


def journal_dir(ctx: Context) -> Path:
    return ctx.layout.hooks_state / "journal"


def boundary(ctx: Context, name: str) -> None:
    """A step boundary: the place a test may stop the process. No-op unless asked."""
    op, _, step = name.partition(".")
    if step not in OPS.get(op, ()):
        raise AssertionError(f"unregistered step boundary {name}")
    log = ctx.env.get("DKMS_HOOKS_STEP_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if ctx.env.get("DKMS_HOOKS_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Operation:
    """One operation in flight and its record on disk."""

    ctx: Context
    kind: str
    module: str
    version: str
    kver: str = ""
    arch: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    step: str = ""
    path: Path | None = None

    def record(self) -> dict[str, Any]:
        return {"op": self.kind, "module": self.module, "version": self.version, "kver": self.kver,
                "arch": self.arch, "pid": os.getpid(), "step": self.step, "data": self.data}

    def advance(self, step: str, **data: Any) -> None:
        """Record that ``step`` is complete (with what recovery needs to know), then pass
        its boundary."""
        self.step = step
        self.data.update(data)
        self._write()
        boundary(self.ctx, f"{self.kind}.{step}")

    def note(self, **data: Any) -> None:
        """Record what is about to change, before it changes (no boundary)."""
        self.data.update(data)
        self._write()

    def _write(self) -> None:
        with _lock:  # against another job's finish() removing the directory
            if self.path is None:
                d = journal_dir(self.ctx)
                d.mkdir(parents=True, exist_ok=True)
                self.path = d / f"{time.time_ns():020d}-{os.getpid()}-{next(_counter)}.json"
            write_atomically(self.path, json.dumps(self.record()))

    def finish(self) -> None:
        if self.path is None:
            return
        with _lock:
            self.path.unlink(missing_ok=True)
            # an empty journal leaves no trace: a refused command changes nothing on disk
            for d in (self.path.parent, self.path.parent.parent):
                try:
                    d.rmdir()
                except OSError:
                    break
            self.path = None


@contextlib.contextmanager
def operation(ctx: Context, kind: str, module: str, version: str, kver: str = "", arch: str = "",
              **data: Any) -> Iterator[Operation]:
    """Record an operation from its ``begin`` step to its end.

    A failure dkms reports (DkmsError) ends the operation as upstream leaves it, so its
    record goes; anything else (an interrupt, an internal error) leaves the record for the
    next run to recover, as a crash would."""
    op = Operation(ctx, kind, module, version, kver, arch, dict(data))
    op.advance("begin")
    try:
        yield op
    except DkmsError:
        op.finish()
        raise
    op.finish()


def depmod_owed(ctx: Context, kver: str) -> None:
    """depmod for ``kver`` is left for later (the end of an event transaction, a kernel
    hook's single run): recorded until it has run, so that a crash before it still gets it."""
    path = journal_dir(ctx) / f"depmod-{kver}.json"
    with _lock:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({"op": "depmod", "module": "", "version": "", "kver": kver, "arch": "",
                                           "pid": os.getpid(), "step": "owed", "data": {}}))


def depmod_ran(ctx: Context, kver: str) -> None:
    path = journal_dir(ctx) / f"depmod-{kver}.json"
    if path.exists():
        Operation(ctx, "depmod", "", "", kver, path=path).finish()


def records(ctx: Context) -> list[Path]:
    """Records left on disk, oldest first."""
    try:
        names = os.listdir(journal_dir(ctx))
    except OSError:
        return []
    return sorted(journal_dir(ctx) / n for n in names if n.endswith(".json") and not n.startswith("."))
