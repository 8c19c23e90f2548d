"""depmod for one kernel, relocated with -b when the install tree is not /lib/modules."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.ops import journal
from dkms_hooks.system import run

_STALE = ("modules.alias", "modules.dep", "modules.devname", "modules.softdep", "modules.symbols",
          "modules.weakdep")


def depmod_argv(ctx: Context, kver: str, basedir: Path | None) -> list[str]:
    argv = ["depmod", "-a"]
    if basedir is not None:
        argv += ["-b", os.fspath(basedir)]
    argv.append(kver)
    system_map = ctx.layout.system_map(kver)
    if system_map.is_file():
        argv += ["-F", os.fspath(system_map)]
    return argv


def do_depmod(ctx: Context, kver: str) -> int:
    """Upstream's do_depmod. Output shows only under --verbose, as upstream's does."""
    rc = _depmod(ctx, kver)
    if rc == 0:
        journal.depmod_ran(ctx, kver)
    return rc


def _depmod(ctx: Context, kver: str) -> int:
    if ctx.options.no_depmod:
        return 0
    say = ctx.console.print if ctx.options.verbose else (lambda *a, **k: None)
    kdir = ctx.layout.install_tree / kver
    dep = kdir / "modules.dep"
    if not dep.is_file():
        say(f"Skipping depmod because '{dep}' is missing.")
        return 0
    install_tree = ctx.layout.install_tree
    with tempfile.TemporaryDirectory(prefix="dkms-hooks-depmod.") as scratch:
        basedir: Path | None = None
        if ctx.layout.is_relocated_install_tree():
            if install_tree.parts[-2:] == ("lib", "modules"):
                basedir = install_tree.parent.parent
            else:
                basedir = Path(scratch)
                (basedir / "lib").mkdir()
                (basedir / "lib/modules").symlink_to(install_tree.resolve())
        try:
            res = run.run(depmod_argv(ctx, kver, basedir), stdout=None if ctx.options.verbose else run.DEVNULL,
                          stderr=None if ctx.options.verbose else run.DEVNULL)
        except run.ToolMissing as e:
            ctx.console.warn(f"{e.tool} not found (install kmod): the module index of {kver} cannot be updated.")
            return 127  # what the shell answers for a missing command
    if res.returncode != 0:
        return res.returncode
    if dep.is_file() and dep.stat().st_size == 0:
        # the last module of a kernel that is no longer installed went away
        for f in sorted(kdir.iterdir()):
            if f.name in _STALE or (f.name.startswith("modules.") and f.name.endswith(".bin")):
                f.unlink(missing_ok=True)
                say(f"removed '{f}'")
        try:
            kdir.rmdir()
            say(f"removed directory {kdir}")
        except OSError:
            pass
    return 0
