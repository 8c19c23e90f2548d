"""Finish or undo what a killed dkms left half done, from its journal records.

Runs with the tree lock held, before any verb (and before ``status``, when nobody holds
the lock). Each operation has one commit point, judged from the files on disk rather than
from the last step recorded (a process can die between a rename and its record):

- add: the ``source`` link exists; before it, the directories made are removed.
- build: POST_BUILD ran; before it, staging, the built directory and ``build/`` go.
- install: the ``kernel-<kver>-<arch>`` link names this version; before it, placed files
  are removed (or the files they replaced put back) and archived originals restored;
  after it, only depmod is left to run.
- uninstall: the link is gone; after it, deleting, restoring originals and depmod are
  finished; before it, nothing had changed.
- unbuild, remove: the directory was renamed aside; after it, it is deleted.
- ldtarball: the module is added; before it, what was loaded is removed and what it
  replaced is put back.

Paths come from the record, which is read as untrusted: each one must lie inside the
dkms, source or install tree, or the record is left alone and reported."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dkms_hooks.model import tree
from dkms_hooks.model.context import Context
from dkms_hooks.ops import add, depmod, files, install, journal, tarball, unbuild
from dkms_hooks.system.console import BufferConsole


class BadRecord(Exception):
    pass


def recover(ctx: Context) -> int:
    """Recover every record left by a dead process (the caller holds the tree lock).
    Returns how many were handled."""
    records = journal.records(ctx)
    _drop_partial_records(ctx)
    if not records:
        return 0
    # recovery reuses the verbs' own code; their messages are not for this run's output
    quiet = ctx.fork(BufferConsole(quiet=True))
    handled = 0
    # the newest first (nested operations before their parents), a depmod left for later last
    owed = [p for p in records if p.name.startswith("depmod-")]
    for path in [p for p in reversed(records) if p not in owed] + owed:
        if not path.exists():
            continue  # a depmod another recovery just ran
        try:
            op = _load(quiet, path)
            what = _RECOVER[op.kind](quiet, op)
        except BadRecord as e:
            ctx.console.eprint(f"dkms: ignoring journal record {path}: {e}")
            continue
        except (OSError, KeyError, ValueError, TypeError) as e:
            # left for a later run (with the rights it needs); never in the way of this one
            ctx.console.eprint(f"dkms: cannot recover from {path}: {e}")
            continue
        op.finish()
        handled += 1
        if op.kind == "depmod":
            ctx.console.eprint(f"dkms: ran depmod for kernel {op.kver}, left over by an interrupted run")
            continue
        target = f"{op.module}/{op.version}" if op.module else "a tarball"
        where = f" for kernel {op.kver} ({op.arch})" if op.kver else ""
        ctx.console.eprint(f"dkms: {what} an interrupted {op.kind} of {target}{where}")
    # status' cache holds nothing about the tree's state, but an interrupted run may have
    # left it half written: start afresh
    with contextlib.suppress(OSError):
        (ctx.layout.hooks_state / "status-cache.json").unlink(missing_ok=True)
    return handled


def recover_if_idle(ctx: Context) -> None:
    """For commands that do not take the lock (status): recover when records exist and no
    dkms holds the lock (a holder is alive and its records are its work in progress)."""
    if not journal.records(ctx):
        return
    try:
        fd = os.open(ctx.layout.dkms_tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        recover(ctx)
    finally:
        os.close(fd)


def _drop_partial_records(ctx: Context) -> None:
    d = journal.journal_dir(ctx)
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        if n.startswith(".") and n.endswith(".tmp"):
            with contextlib.suppress(OSError):
                (d / n).unlink(missing_ok=True)


def _load(ctx: Context, path: Path) -> journal.Operation:
    try:
        rec = json.loads(path.read_text())
        kind = rec["op"]
        if kind not in _RECOVER or not isinstance(rec["data"], dict):
            raise BadRecord(f"unknown operation {kind!r}")
        op = journal.Operation(ctx, kind, str(rec["module"]), str(rec["version"]), str(rec["kver"]),
                               str(rec["arch"]), rec["data"], str(rec["step"]), path)
    except (ValueError, KeyError, TypeError) as e:
        raise BadRecord(f"unreadable ({e})") from e
    for name in ("module", "version", "kver", "arch"):
        value = getattr(op, name)
        if "/" in value or value in (".", ".."):
            raise BadRecord(f"bad {name} {value!r}")
    _check_paths(ctx, {k: v for k, v in op.data.items() if k not in ("plan", "conf")})
    for name, loc, declared in op.data.get("plan", []):
        # module names and locations relative to the kernel's module directory
        if "/" in name or ".." in Path(loc).parts or ".." in Path(declared).parts:
            raise BadRecord(f"bad module location {name!r} {loc!r}")
    return op


def _check_paths(ctx: Context, data: Any) -> None:
    """Every path-like string in the record must be inside one of the trees."""
    lay = ctx.layout
    roots = [Path(os.path.abspath(r)) for r in (lay.dkms_tree, lay.source_tree, lay.install_tree)]
    if isinstance(data, dict):
        for v in data.values():
            _check_paths(ctx, v)
    elif isinstance(data, list):
        for v in data:
            _check_paths(ctx, v)
    elif isinstance(data, str) and data.startswith("/"):
        p = Path(os.path.abspath(data))
        if ".." in Path(data).parts or not any(p != r and r in p.parents for r in roots):
            raise BadRecord(f"path outside the trees: {data}")


def _rmtree(path: str | Path) -> None:
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    else:
        shutil.rmtree(p, ignore_errors=True)


def _depmod(ctx: Context, kver: str) -> None:
    if kver:
        depmod.do_depmod(ctx, kver)


# --- one function per operation; each returns what it did ("finished" or "rolled back") ----
def _add(ctx: Context, op: journal.Operation) -> str:
    lay = ctx.layout
    d = op.data
    Path(d["link_tmp"]).unlink(missing_ok=True)
    if lay.source_link(op.module, op.version).is_symlink():
        saved = lay.saved_conf(op.module, op.version)
        if not saved.is_file() and Path(d["conf"]).is_file():
            add.save_conf(ctx, op.module, op.version, Path(d["conf"]))
        return "finished"
    if not d["build_dir_existed"]:
        with contextlib.suppress(OSError):
            lay.build_dir(op.module, op.version).rmdir()
    if not d["version_dir_existed"]:
        with contextlib.suppress(OSError):
            lay.version_dir(op.module, op.version).rmdir()
    if not d["module_dir_existed"]:
        with contextlib.suppress(OSError):
            lay.module_dir(op.module).rmdir()
    return "rolled back"


def _build(ctx: Context, op: journal.Operation) -> str:
    d = op.data
    build_dir = Path(d["build_dir"])
    base_dir = Path(d["base_dir"])
    if op.step == "post-build-done":
        log = build_dir / "make.log"
        if log.is_file() and (base_dir / "log").is_dir():
            os.replace(log, base_dir / "log/make.log")
        _rmtree(build_dir)
        return "finished"
    if d.get("staging"):
        _rmtree(d["staging"])
    # the built directory did not exist when the build began (do_build refuses otherwise)
    _rmtree(base_dir)
    _rmtree(build_dir)
    if not d.get("kernel_dir_existed", True):
        with contextlib.suppress(OSError):
            Path(d["kernel_dir"]).rmdir()
    return "rolled back"


def _install(ctx: Context, op: journal.Operation) -> str:
    lay = ctx.layout
    d = op.data
    lib_tree = Path(d["lib_tree"])
    active = Path(d["active"])
    active.with_name(f".{active.name}.new").unlink(missing_ok=True)
    if tree.is_active(lay, op.module, op.version, op.kver, op.arch):
        install.drop_kept(d["placed"])
        _depmod(ctx, op.kver)
        return "finished"
    for dest_s, keep_s, tmp_s in reversed(d["placed"]):
        dest, tmp = Path(dest_s), Path(tmp_s)
        tmp.unlink(missing_ok=True)
        if keep_s:
            if Path(keep_s).exists() or Path(keep_s).is_symlink():
                os.replace(keep_s, dest)
            # else the file it would replace was never touched
        else:
            dest.unlink(missing_ok=True)  # nothing was there before: what is there is ours
            files.prune_empty_parents(dest.parent, lib_tree)
    for original_s, target_s, origin_s in reversed(d["archived"]):
        original, target = Path(original_s), Path(target_s)
        Path(target.parent / f".{original.name}.new").unlink(missing_ok=True)
        if target.exists():
            if original.exists():
                target.unlink()  # a copy across filesystems that had not let go of the original
            else:
                original.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(target, original)
                except OSError:
                    shutil.copy2(target, original)
                    target.unlink()
        Path(origin_s).unlink(missing_ok=True)
        Path(target.parent / f".{Path(origin_s).name}.new").unlink(missing_ok=True)
    originals = lay.module_dir(op.module) / "original_module"
    if originals.is_dir():
        install.remove_empty_dirs(originals)
    return "rolled back"


def _uninstall(ctx: Context, op: journal.Operation) -> str:
    if tree.is_active(ctx.layout, op.module, op.version, op.kver, op.arch):
        return "rolled back"  # nothing had changed yet
    install.uninstall_files(ctx, op)
    _depmod(ctx, op.kver)
    install.drop_originals(ctx, op.module, op.kver, op.arch)
    return "finished"


def _unbuild(ctx: Context, op: journal.Operation) -> str:
    aside = Path(op.data["aside"])
    if not aside.exists():
        return "rolled back"
    unbuild.finish_unbuild(ctx, op.module, op.version, op.kver, aside)
    return "finished"


def _remove(ctx: Context, op: journal.Operation) -> str:
    aside = Path(op.data["aside"])
    if not aside.exists():
        return "rolled back"
    unbuild.finish_remove(ctx, op.module, op.version, aside)
    return "finished"


def _ldtarball(ctx: Context, op: journal.Operation) -> str:
    lay = ctx.layout
    d = op.data
    if op.module and tree.is_added(lay, op.module, op.version):
        tarball.drop_asides(op)
        return "finished"
    if d.get("source_tmp"):
        _rmtree(d["source_tmp"])
    for dest_s, staging_s, aside_s, existed in reversed(d.get("loaded", [])):
        _rmtree(staging_s)
        dest, aside = Path(dest_s), Path(aside_s)
        if aside.is_dir():
            _rmtree(dest)
            os.rename(aside, dest)
        elif not existed:
            _rmtree(dest)
        # else what was there was never moved
        kdir = dest.parent
        with contextlib.suppress(OSError):
            if kdir.is_dir() and not any(kdir.iterdir()):
                kdir.rmdir()
    if d.get("source_dest"):
        source = Path(d["source_dest"])
        if d.get("source_aside") and Path(d["source_aside"]).is_dir():
            _rmtree(source)
            os.rename(d["source_aside"], source)
        elif not d.get("source_existed", True):
            _rmtree(source)
    if d.get("version_dir") and not d.get("version_dir_existed", True):
        _rmtree(d["version_dir"])
    if op.module and not d.get("module_dir_existed", True):
        with contextlib.suppress(OSError):
            lay.module_dir(op.module).rmdir()
    return "rolled back"


def _owed_depmod(ctx: Context, op: journal.Operation) -> str:
    _depmod(ctx, op.kver)
    # the same debt as upstream's kernel hooks note it, and as earlier dkms-hooks did
    for pending in ctx.layout.dkms_tree.glob(f"depmod-pending-{op.kver}-*"):
        pending.unlink(missing_ok=True)
    return "finished"


_RECOVER: dict[str, Callable[[Context, journal.Operation], str]] = {
    "depmod": _owed_depmod,
    "add": _add,
    "build": _build,
    "install": _install,
    "uninstall": _uninstall,
    "unbuild": _unbuild,
    "remove": _remove,
    "ldtarball": _ldtarball,
}
