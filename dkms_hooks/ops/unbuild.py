"""Taking a built module out of the tree (unbuild), and the last step of removing a whole
module version; both also finish what recovery finds half done."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.ops import journal
from dkms_hooks.ops.files import aside_name, prune_empty_parents


def do_unbuild(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    lay = ctx.layout
    built = lay.built_dir(module, version, kver, arch)
    aside = aside_name(built)
    with journal.operation(ctx, "unbuild", module, version, kver, arch, aside=os.fspath(aside)) as op:
        # one rename takes the whole built directory out of the tree; then it is deleted
        shutil.rmtree(aside, ignore_errors=True)
        if built.is_dir() or built.is_symlink():
            os.rename(built, aside)
        op.advance("moved-aside")
        finish_unbuild(ctx, module, version, kver, aside)


def finish_unbuild(ctx: Context, module: str, version: str, kver: str, aside: Path) -> None:
    shutil.rmtree(aside, ignore_errors=True)
    kdir = ctx.layout.kernel_dir(module, version, kver)
    if kdir.is_dir() and not any(p.is_dir() for p in kdir.iterdir()):
        shutil.rmtree(kdir, ignore_errors=True)


def finish_remove(ctx: Context, module: str, version: str, aside: Path) -> None:
    lay = ctx.layout
    shutil.rmtree(aside, ignore_errors=True)
    for own in (lay.failed_logs(module, version), lay.build_records(module, version),
                lay.saved_conf(module, version).parent, lay.private_build_dir(module, version, "k", "a").parent):
        shutil.rmtree(own, ignore_errors=True)
        prune_empty_parents(own.parent, lay.dkms_tree)
    mdir = lay.module_dir(module)
    if mdir.is_dir() and not any(mdir.iterdir()):
        shutil.rmtree(mdir, ignore_errors=True)
