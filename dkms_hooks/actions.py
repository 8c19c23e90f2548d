"""The verbs: add, build, install, uninstall, unbuild, remove, and the loops over kernels."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from dkms_hooks import build, dkmsconf, install, journal, scripts, steps, tree
from dkms_hooks.context import Context
from dkms_hooks.errors import DkmsError


def check_module_args(ctx: Context, action: str) -> None:
    o = ctx.options
    if o.module and o.version:
        return
    raise DkmsError(
        1,
        "Arguments <module> and <module-version> are not specified.",
        f"Usage: {action} <module>/<module-version> or",
        f"       {action} -m <module>/<module-version> or",
        f"       {action} -m <module> -v <module-version>",
    )


def add_source_tree(ctx: Context, path: str, *, op: journal.Operation | None = None) -> None:
    """Copy a source tree (a directory holding dkms.conf) to <sourcetree>/<name>-<version>.
    ``op`` (ldtarball) records the copy, so that an interrupted one is undone."""
    src = os.path.realpath(path)
    if not (src and os.path.isfile(os.path.join(src, "dkms.conf"))):
        raise DkmsError(9, f"{path} must contain a dkms.conf file!")
    check_root(ctx)
    conf_path = os.path.join(src, "dkms.conf")
    o = ctx.options
    conf = ctx.read_conf(o.module, o.version, o.kernels[0] if o.kernels else "", o.arches[0] if o.arches else "",
                         conf_path)
    name, version = conf.scalar("PACKAGE_NAME"), conf.scalar("PACKAGE_VERSION")
    if not (name and version):
        raise DkmsError(10, "Malformed dkms.conf file. Cannot load source tree.")
    o.module, o.version = name, version
    lay = ctx.layout
    dest = lay.source_dir(name, version)
    if op is not None:
        op.module, op.version = name, version
        op.note(source_dest=os.fspath(dest), source_existed=dest.is_dir(),
                version_dir=os.fspath(lay.version_dir(name, version)),
                version_dir_existed=lay.version_dir(name, version).is_dir(),
                module_dir_existed=lay.module_dir(name).is_dir())
    if o.force and dest.is_dir():
        ctx.console.eprint("")
        ctx.console.print(f"Forcing install of {name}/{version}")
        if op is None:
            shutil.rmtree(dest)
        else:
            aside = aside_name(dest)
            op.note(source_aside=os.fspath(aside))
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(dest, aside)
    if src in (os.fspath(dest), os.fspath(lay.source_link(name, version)), os.fspath(lay.build_dir(name, version))):
        return
    _copy_source(Path(src), dest, op)


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


def add_module(ctx: Context, module: str = "", version: str = "") -> None:
    o = ctx.options
    if module:
        o.module, o.version = module, version
    elif o.archive and not o.module and not o.version:
        from dkms_hooks import tarball

        tarball.load_tarball(ctx)
    elif o.try_source_tree and not o.module and not o.version:
        add_source_tree(ctx, o.try_source_tree)
    check_module_args(ctx, "add")
    module, version = o.module, o.version
    lay = ctx.layout
    if o.rpm_safe_upgrade:
        from dkms_hooks import rpmsafe

        rpmsafe.write_lock(ctx, module, version)
    if tree.is_added(lay, module, version):
        raise DkmsError(3, f"DKMS tree already contains: {module}/{version}",
                        "You cannot add the same module/version combo more than once.")
    source_dir = lay.source_dir(module, version)
    source_conf = o.conf or os.fspath(source_dir / "dkms.conf")
    if not source_dir.is_dir():
        raise DkmsError(2, "Could not find module source directory.",
                        f"Directory: {source_dir} does not exist.")
    conf = ctx.read_conf(module, version, o.kernels[0] if o.kernels else "", o.arches[0] if o.arches else "",
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


def prune_empty_parents(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents while they are empty, up to ``stop`` (kept)."""
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def save_conf(ctx: Context, module: str, version: str, conf: Path) -> None:
    saved = ctx.layout.saved_conf(module, version)
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(".dkms.conf.new")
        shutil.copyfile(conf, tmp)
        os.replace(tmp, saved)
    except OSError:
        pass


def check_root(ctx: Context) -> None:
    if os.geteuid() != 0:
        raise DkmsError(1, "You must be root to use this command.")


def check_rw_dkms_tree(ctx: Context) -> None:
    tree_dir = ctx.layout.dkms_tree
    if not tree_dir.exists():
        try:
            tree_dir.mkdir(parents=True)
        except OSError:
            pass
    if not os.access(tree_dir, os.W_OK):
        raise DkmsError(1, f"No write access to DKMS tree at {tree_dir}")


def module_is_broken_and_die(ctx: Context) -> None:
    o = ctx.options
    if tree.is_broken(ctx.layout, o.module, o.version):
        raise DkmsError(4, f"{o.module}/{o.version} is broken!",
                        "Missing the source directory or the symbolic link pointing to it.",
                        "Manual intervention is required!")


def module_is_added_or_die(ctx: Context) -> None:
    o = ctx.options
    if not tree.is_added(ctx.layout, o.module, o.version):
        raise DkmsError(3, f"The module/version combo: {o.module}/{o.version} is not located in the DKMS tree.")


# --- per-kernel steps, each run as upstream runs its subshells ------------------------
def maybe_build(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    with ctx.subshell():
        if tree.is_built(ctx.layout, module, version, kver, arch):
            if ctx.options.force:
                do_unbuild(ctx, module, version, kver, arch)
            else:
                ctx.console.print(f"Module {module}/{version} already built for kernel {kver} ({arch}), skip. "
                                  "You may override by specifying --force.")
                return
        build.do_build(ctx, module, version, kver, arch)


def maybe_install(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    with ctx.subshell():
        if tree.is_installed(ctx.layout, module, version, kver, arch):
            if ctx.options.force:
                install.do_uninstall(ctx, module, version, kver, arch)
                ctx.console.print("")
            else:
                ctx.console.print(f"Module {module}/{version} already installed on kernel {kver} ({arch}), skip. "
                                  "You may override by specifying --force.")
                return
        install.do_install(ctx, module, version, kver, arch)


def maybe_uninstall(ctx: Context, module: str, version: str, kver: str, arch: str, *,
                    delayed_depmod: bool = False) -> None:
    lay = ctx.layout
    if tree.is_installed(lay, module, version, kver, arch):
        install.do_uninstall(ctx, module, version, kver, arch, delayed_depmod=delayed_depmod)
        return
    # A module kept off this kernel by BUILD_EXCLUSIVE is expected not to be installed.
    conf_file = lay.source_link(module, version) / "dkms.conf"
    if conf_file.is_file():
        saved = (ctx.last_conf_key, ctx.last_conf)
        try:
            with ctx.console.without_stderr():
                conf = ctx.read_conf(module, version, kver, arch, os.fspath(conf_file), or_die=False)
        except DkmsError:
            conf = None
        finally:
            ctx.last_conf_key, ctx.last_conf = saved
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


def aside_name(path: Path) -> Path:
    """Where a directory goes on its way out: a dot name beside it, which no glob of the
    tree matches."""
    return path.with_name(f".{path.name}.dkms-del")


def finish_unbuild(ctx: Context, module: str, version: str, kver: str, aside: Path) -> None:
    shutil.rmtree(aside, ignore_errors=True)
    kdir = ctx.layout.kernel_dir(module, version, kver)
    if kdir.is_dir() and not any(p.is_dir() for p in kdir.iterdir()):
        shutil.rmtree(kdir, ignore_errors=True)


# --- the verbs over every requested kernel ---------------------------------------------
def _pairs(ctx: Context) -> list[tuple[str, str]]:
    o = ctx.options
    return list(zip(o.kernels, o.arches))


def _each_kernel(ctx: Context, step: Callable[[Context, str, str, str, str], None]) -> None:
    """Run ``step`` for every requested kernel: one after another as upstream does, or,
    given several kernels and a job budget, side by side (each kernel's build in its own
    directory when the dkms.conf allows), printing what each printed in the order a serial
    run would have. The first failure, in that order, is the run's error; the other
    kernels' work is done and kept."""
    pairs = _pairs(ctx)
    m, v = ctx.options.module, ctx.options.version
    if len(pairs) < 2 or ctx.budget() <= 1:
        for k, a in pairs:
            step(ctx, m, v, k, a)
        return
    from dkms_hooks import scheduler

    errors: dict[int, DkmsError] = {}
    jobserver = scheduler.JobServer(ctx.budget())
    ctx.private_builds = True
    ctx.conf_memo = {}

    def run_one(i: int, console: scheduler.BufferConsole) -> int:
        job_ctx = ctx.fork(console, jobserver)
        try:
            step(job_ctx, m, v, *pairs[i])
        except DkmsError as e:
            errors[i] = e
            return e.code or 1
        return 0

    # the same module for several kernels: without a build directory of its own, a
    # kernel's build waits for the previous one (they would share the upstream one)
    def deps(i: int) -> set[int]:
        return set() if own_build_dir(ctx, m, v, *pairs[i]) else set(range(i))

    try:
        scheduler.run_jobs(list(range(len(pairs))), deps, run_one, budget=ctx.budget(), console=ctx.console,
                           jobserver=jobserver, blocked=lambda job, results: False)
    finally:
        jobserver.close()
        ctx.private_builds = False
        ctx.conf_memo = None
    if errors:
        raise errors[min(errors)]


def own_build_dir(ctx: Context, module: str, version: str, kver: str, arch: str) -> bool:
    from dkms_hooks.scheduler import BufferConsole

    quiet = ctx.fork(BufferConsole(quiet=True))  # the job itself prints any warnings
    try:
        conf = quiet.read_conf(module, version, kver, arch, or_die=False)
    except DkmsError:
        return False
    return conf.ok and build.private_build_dir(quiet, conf, module, version, kver, arch) is not None


def build_module(ctx: Context) -> None:
    _each_kernel(ctx, maybe_build)


def install_module(ctx: Context) -> None:
    _each_kernel(ctx, maybe_install)


def uninstall_module(ctx: Context) -> None:
    for i, (k, a) in enumerate(_pairs(ctx)):
        if i:
            ctx.console.print("")
        maybe_uninstall(ctx, ctx.options.module, ctx.options.version, k, a)


def unbuild_module(ctx: Context, module: str | None = None, version: str | None = None, *,
                   delayed_depmod: bool = False) -> None:
    m = module or ctx.options.module
    v = version or ctx.options.version
    for i, (k, a) in enumerate(_pairs(ctx)):
        if i:
            ctx.console.print("")
        maybe_uninstall(ctx, m, v, k, a, delayed_depmod=delayed_depmod)
        maybe_unbuild(ctx, m, v, k, a)


def remove_module(ctx: Context) -> None:
    lay = ctx.layout
    o = ctx.options
    vdir = lay.version_dir(o.module, o.version)
    for tmp in vdir.glob("*/.tmp_*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for d in vdir.iterdir() if vdir.is_dir() else []:
        if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            d.rmdir()
    if o.rpm_safe_upgrade:
        from dkms_hooks import rpmsafe

        if rpmsafe.upgrade_in_progress(ctx, o.module, o.version):
            return
    for k, a in _pairs(ctx):
        maybe_uninstall(ctx, o.module, o.version, k, a)
        maybe_unbuild(ctx, o.module, o.version, k, a)
        ctx.console.print("")
    kept = ("build", "tarball", "driver_disk", "rpm", "deb", "source")
    others = [p for p in vdir.iterdir() if p.is_dir() and not p.name.endswith(kept)] if vdir.is_dir() else []
    if not others:
        ctx.console.print(f"Deleting module {o.module}/{o.version} completely from the DKMS tree.")
        aside = aside_name(vdir)
        with journal.operation(ctx, "remove", o.module, o.version, aside=os.fspath(aside)) as op:
            # a half-deleted version directory would read as broken: take it out in one rename
            shutil.rmtree(aside, ignore_errors=True)
            if vdir.is_dir():
                os.rename(vdir, aside)
            op.advance("moved-aside")
            finish_remove(ctx, o.module, o.version, aside)
    mdir = lay.module_dir(o.module)
    if mdir.is_dir() and not any(mdir.iterdir()):
        shutil.rmtree(mdir, ignore_errors=True)


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


def post_transaction(ctx: Context) -> None:
    """Run framework.conf's post_transaction command, logged to the tree."""
    from dkms_hooks import settings

    kver = ctx.options.kernels[0] if ctx.options.kernels else ""
    arch = ctx.options.arches[0] if ctx.options.arches else ""
    log = ctx.layout.post_transaction_log
    log.write_text("")
    values = settings.read_framework(ctx.layout, ["post_transaction"],
                                     scope=ctx.conf_scope("", "", ctx.kernel(kver, arch)), env=ctx.env)
    command = values.get("post_transaction", "")
    steps.invoke_shell(ctx, command, "Executing post-transaction command", log,
                       variables=ctx.conf_scope(ctx.options.module, ctx.options.version, ctx.kernel(kver, arch)))


def run_match(ctx: Context) -> None:
    """Install on -k every module installed on --templatekernel."""
    from dkms_hooks import signing, status

    o = ctx.options
    kver, arch = o.kernels[0], o.arches[0]
    template = o.template_kernel
    if not template:
        raise DkmsError(1, "Invalid number of parameters passed.",
                        "Usage: match --templatekernel=<kernel-version> -k <kernel-version>",
                        "   or: match --templatekernel=<kernel-version> -k <kernel-version> <module>")
    if template == kver:
        raise DkmsError(2, "The templatekernel and the specified kernel version are the same.")
    installed = [e for e in status.collect(ctx, "", "", template, arch) if e.state is tree.State.installed]
    if o.module:
        if not ctx.layout.module_dir(o.module).is_dir():
            raise DkmsError(3, f"The module: {o.module} is not located in the DKMS tree.")
        installed = [e for e in installed if e.module == o.module]
    console = ctx.console
    console.print("")
    console.print(f"Matching modules in kernel: {kver} ({arch})")
    console.print(f"to the configuration of kernel: {template} ({arch})")
    if not installed:
        console.print("")
        console.print("There is nothing to be done for this match.")
        return
    signing.check_headers(ctx, ctx.kernel(kver, arch))
    for e in installed:
        console.print(f"Module:  {e.module}")
        console.print(f"Version: {e.version}")
        if tree.is_broken(ctx.layout, e.module, e.version):
            console.error(f"{e.module}/{e.version} is broken!",
                          "Missing the source directory or the symbolic link pointing to it.",
                          "Manual intervention is required!")
            continue
        maybe_build(ctx, e.module, e.version, kver, arch)
        maybe_install(ctx, e.module, e.version, kver, arch)
