"""The per-kernel steps as upstream runs them, each in its own subshell: build, install,
uninstall and unbuild one module version for one kernel, first checking whether the step
is needed at all."""

from __future__ import annotations

import os

from dkms_hooks.model import dkmsconf, tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.ops import build, dependencies, install
from dkms_hooks.ops.unbuild import do_unbuild
from dkms_hooks.system.console import BufferConsole
from dkms_hooks.system.errors import DkmsError


def maybe_build(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    with ctx.subshell():
        if tree.is_built(ctx.layout, module, version, kver, arch):
            if ctx.shell.force:
                do_unbuild(ctx, module, version, kver, arch)
            else:
                ctx.console.print(f"Module {module}/{version} already built for kernel {kver} ({arch}), skip. "
                                  "You may override by specifying --force.")
                return
        build.do_build(ctx, module, version, kver, arch)


def maybe_install(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    with ctx.subshell():
        if tree.is_installed(ctx.layout, module, version, kver, arch):
            if ctx.shell.force:
                install.do_uninstall(ctx, module, version, kver, arch)
                ctx.console.print("")
            else:
                ctx.console.print(f"Module {module}/{version} already installed on kernel {kver} ({arch}), skip. "
                                  "You may override by specifying --force.")
                return
        install.do_install(ctx, module, version, kver, arch)
        dependencies.rebuild_dependents(ctx, kver, arch)


def maybe_uninstall(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    lay = ctx.layout
    if tree.is_installed(lay, module, version, kver, arch):
        install.do_uninstall(ctx, module, version, kver, arch)
        return
    # A module kept off this kernel by BUILD_EXCLUSIVE is expected not to be installed.
    conf_file = lay.source_link(module, version) / "dkms.conf"
    if conf_file.is_file():
        saved = (ctx.shell.last_conf_key, ctx.shell.last_conf)
        try:
            with ctx.console.without_stderr():
                conf = read_conf(ctx, module, version, kver, arch, os.fspath(conf_file), or_die=False)
        except DkmsError:
            conf = None
        finally:
            ctx.shell.last_conf_key, ctx.shell.last_conf = saved
        if conf is not None and any(
            conf.element(n, m.index)
            for m in conf.modules
            for n in dkmsconf.EXCLUSIVE_DIRECTIVES
        ):
            return
    ctx.console.print(f"Module {module}/{version} is not installed for kernel {kver} ({arch}). Skipping...")


def maybe_unbuild(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    if not tree.is_built(ctx.layout, module, version, kver, arch):
        ctx.console.print(f"Module {module}/{version} is not built for kernel {kver} ({arch}). Skipping...")
        return
    do_unbuild(ctx, module, version, kver, arch)


def own_build_dir(ctx: Context, module: str, version: str, kver: str, arch: str) -> bool:
    quiet = ctx.fork(BufferConsole(quiet=True))  # the job itself prints any warnings
    try:
        conf = read_conf(quiet, module, version, kver, arch, or_die=False)
    except DkmsError:
        return False
    return conf.ok and build.allows_private_build(quiet, conf, module, version)
