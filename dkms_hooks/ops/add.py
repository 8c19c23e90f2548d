"""``dkms add``: register a module source (a copy of a source tree, or one already in
place), crash-safe through the journal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dkms_hooks.model import tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.ops import journal, rpmsafe, scripts
from dkms_hooks.ops.files import aside_name
from dkms_hooks.system.errors import DkmsError


def check_root(ctx: Context) -> None:
    if os.geteuid() != 0:
        raise DkmsError(1, "You must be root to use this command.")


def add_source_tree(ctx: Context, path: str, *, op: journal.Operation | None = None) -> tuple[str, str]:
    """Copy a source tree (a directory holding dkms.conf) to <sourcetree>/<name>-<version>;
    returns the name and version its dkms.conf gives. ``op`` (ldtarball) records the copy,
    so that an interrupted one is undone."""
    src = os.path.realpath(path)
    if not (src and os.path.isfile(os.path.join(src, "dkms.conf"))):
        raise DkmsError(9, f"{path} must contain a dkms.conf file!")
    check_root(ctx)
    conf_path = os.path.join(src, "dkms.conf")
    o = ctx.options
    conf = read_conf(ctx, o.module, o.version, o.kernels[0] if o.kernels else "", o.arches[0] if o.arches else "",
                         conf_path)
    name, version = conf.scalar("PACKAGE_NAME"), conf.scalar("PACKAGE_VERSION")
    if not (name and version):
        raise DkmsError(10, "Malformed dkms.conf file. Cannot load source tree.")
    lay = ctx.layout
    dest = lay.source_dir(name, version)
    if op is not None:
        op.module, op.version = name, version
        op.note(source_dest=os.fspath(dest), source_existed=dest.is_dir(),
                version_dir=os.fspath(lay.version_dir(name, version)),
                version_dir_existed=lay.version_dir(name, version).is_dir(),
                module_dir_existed=lay.module_dir(name).is_dir())
    if ctx.shell.force and dest.is_dir():
        ctx.console.eprint("")
        ctx.console.print(f"Forcing install of {name}/{version}")
        if op is None:
            shutil.rmtree(dest)
        else:
            aside = aside_name(dest)
            op.note(source_aside=os.fspath(aside))
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(dest, aside)
    if src not in (os.fspath(dest), os.fspath(lay.source_link(name, version)), os.fspath(lay.build_dir(name, version))):
        _copy_source(Path(src), dest, op)
    return name, version


def _copy_source(src: Path, dest: Path, op: journal.Operation | None) -> None:
    """Copy into place through a temporary sibling, so a half-copied tree is never seen
    under the final name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir():
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        return
    tmp = dest.with_name(f".{dest.name}.dkms-new")
    if op is not None:
        op.note(source_tmp=os.fspath(tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True)
    if op is not None:
        op.advance("source-staged")
    os.rename(tmp, dest)
    if op is not None:
        op.advance("source-placed")


def add_module(ctx: Context, module: str, version: str) -> None:
    """Register ``<source_tree>/<module>-<version>`` (upstream's add, after its argument checks)."""
    o = ctx.options
    lay = ctx.layout
    if o.rpm_safe_upgrade:
        rpmsafe.write_lock(ctx, module, version)
    if tree.is_added(lay, module, version):
        raise DkmsError(3, f"DKMS tree already contains: {module}/{version}",
                        "You cannot add the same module/version combo more than once.")
    source_dir = lay.source_dir(module, version)
    source_conf = o.conf or os.fspath(source_dir / "dkms.conf")
    if not source_dir.is_dir():
        raise DkmsError(2, "Could not find module source directory.",
                        f"Directory: {source_dir} does not exist.")
    conf = read_conf(ctx, module, version, o.kernels[0] if o.kernels else "", o.arches[0] if o.arches else "",
                         source_conf, strict=True)
    ctx.console.print(f"Creating symlink {lay.source_link(module, version)} -> {source_dir}")
    link = lay.source_link(module, version)
    tmp = link.with_name(".source.dkms-new")
    with journal.operation(ctx, "add", module, version, module_dir_existed=lay.module_dir(module).is_dir(),
                           version_dir_existed=lay.version_dir(module, version).is_dir(),
                           build_dir_existed=lay.build_dir(module, version).is_dir(), link_tmp=os.fspath(tmp),
                           conf=os.path.abspath(source_conf)) as op:
        lay.build_dir(module, version).mkdir(parents=True, exist_ok=True)
        op.advance("dir-made")
        tmp.unlink(missing_ok=True)
        os.symlink(source_dir, tmp)
        os.replace(tmp, link)
        op.advance("linked")
        save_conf(ctx, module, version, Path(source_conf))
    scripts.run_script(ctx, "post_add", conf.script("POST_ADD"), module, version)


def save_conf(ctx: Context, module: str, version: str, conf: Path) -> None:
    saved = ctx.layout.saved_conf(module, version)
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(".dkms.conf.new")
        shutil.copyfile(conf, tmp)
        os.replace(tmp, saved)
    except OSError:
        pass
