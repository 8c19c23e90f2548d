"""Upstream's module verbs over the requested kernels (build, install, uninstall, unbuild,
remove, match, add and ldtarball), their argument checks, and framework.conf's
post_transaction. Builds and installs for several kernels are one planned graph, run by the
one runner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from dkms_hooks.model import settings, tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.jobs import Job, Ran
from dkms_hooks.ops import add, journal, maybe, rpmsafe, signing, steps, tarball
from dkms_hooks.ops.files import aside_name
from dkms_hooks.ops.unbuild import finish_remove
from dkms_hooks.system.console import BufferConsole
from dkms_hooks.system.errors import DkmsError
from dkms_hooks.transaction import autoinstall, planner, runner

Step = Callable[[Context, str, str, str, str], None]


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


def add_verb(ctx: Context) -> Context:
    """``dkms add``: a module/version, or a source tree (--archive, or a path) copied in
    first. Returns the run's context with the module and version that were added, for the
    build or install that follows."""
    o = ctx.options
    if o.archive and not o.module and not o.version:
        loaded, module, version = tarball.load_tarball(ctx)
        if loaded is tarball.Loaded.package:
            autoinstall.autoinstall(ctx)
        ctx = ctx.with_options(module=module, version=version)
    elif o.try_source_tree and not o.module and not o.version:
        module, version = add.add_source_tree(ctx, o.try_source_tree)
        ctx = ctx.with_options(module=module, version=version)
    check_module_args(ctx, "add")
    add.add_module(ctx, ctx.options.module, ctx.options.version)
    return ctx


def ldtarball(ctx: Context) -> int:
    with journal.operation(ctx, "ldtarball", "", "") as op:
        loaded, module, version = tarball.load_tarball(ctx, op)
        if loaded is tarball.Loaded.package:
            autoinstall.autoinstall(ctx)
        elif loaded is tarball.Loaded.source:
            add_verb(ctx.with_options(module=module, version=version))
        tarball.drop_asides(op)
    return 0 if loaded is tarball.Loaded.source else 1


def _pairs(ctx: Context) -> list[tuple[str, str]]:
    o = ctx.options
    return list(zip(o.kernels, o.arches))


def _each_kernel(ctx: Context, step: Step) -> None:
    """``step`` for every requested kernel: one graph, side by side in the job budget (each
    kernel's build in its own directory when the dkms.conf allows), printed in the order a
    serial run prints. Every kernel's work is done and kept; the first failure, in that
    order, is the run's error."""
    m, v = ctx.options.module, ctx.options.version
    jobs = [Job(m, v, k, a) for k, a in _pairs(ctx)]

    def body(job_ctx: Context, job: Job) -> int:
        step(job_ctx, job.module, job.version, job.kver, job.arch)
        return 0

    plan = planner.graph(jobs, lambda job: (), lambda j: maybe.own_build_dir(ctx, j.module, j.version, j.kver, j.arch))
    _raise_first(runner.run(ctx, plan, body))


def _raise_first(outcomes: list[Ran]) -> None:
    """Every job's work is done and kept; the first error, in the run's order, is the run's."""
    for r in outcomes:
        if r.error is not None:
            raise r.error


def build_module(ctx: Context) -> None:
    _each_kernel(ctx, maybe.maybe_build)


def install_module(ctx: Context) -> None:
    _each_kernel(ctx, maybe.maybe_install)


def uninstall_module(ctx: Context) -> None:
    for i, (k, a) in enumerate(_pairs(ctx)):
        if i:
            ctx.console.print("")
        maybe.maybe_uninstall(ctx, ctx.options.module, ctx.options.version, k, a)


def unbuild_module(ctx: Context) -> None:
    m, v = ctx.options.module, ctx.options.version
    for i, (k, a) in enumerate(_pairs(ctx)):
        if i:
            ctx.console.print("")
        maybe.maybe_uninstall(ctx, m, v, k, a)
        maybe.maybe_unbuild(ctx, m, v, k, a)


def remove_module(ctx: Context) -> None:
    """``dkms remove``: the module version off every requested kernel, then, when no kernel
    keeps it built, out of the tree."""
    lay = ctx.layout
    o = ctx.options
    vdir = lay.version_dir(o.module, o.version)
    for tmp in vdir.glob("*/.tmp_*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for d in vdir.iterdir() if vdir.is_dir() else []:
        if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            d.rmdir()
    if o.rpm_safe_upgrade and rpmsafe.upgrade_in_progress(ctx, o.module, o.version):
        return
    for k, a in _pairs(ctx):
        maybe.maybe_uninstall(ctx, o.module, o.version, k, a)
        maybe.maybe_unbuild(ctx, o.module, o.version, k, a)
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


def post_transaction(ctx: Context) -> None:
    """Run framework.conf's post_transaction command, logged to the tree."""
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
    o = ctx.options
    kver, arch = o.kernels[0], o.arches[0]
    template = o.template_kernel
    if not template:
        raise DkmsError(1, "Invalid number of parameters passed.",
                        "Usage: match --templatekernel=<kernel-version> -k <kernel-version>",
                        "   or: match --templatekernel=<kernel-version> -k <kernel-version> <module>")
    if template == kver:
        raise DkmsError(2, "The templatekernel and the specified kernel version are the same.")
    entries = tree.status_entries(ctx.layout, "", "", template, arch)
    for e in entries:
        if e.state is tree.State.broken:
            ctx.console.error(f"{e.module}/{e.version}: Missing the module source directory or the symbolic "
                              "link pointing to it.", "Manual intervention is required!")
    installed = [e for e in entries if e.state is tree.State.installed]
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
    jobs = [Job(e.module, e.version, kver, arch) for e in installed]

    def body(job_ctx: Context, job: Job) -> int:
        job_ctx.console.print(f"Module:  {job.module}")
        job_ctx.console.print(f"Version: {job.version}")
        if tree.is_broken(job_ctx.layout, job.module, job.version):
            job_ctx.console.error(f"{job.module}/{job.version} is broken!",
                                  "Missing the source directory or the symbolic link pointing to it.",
                                  "Manual intervention is required!")
            return 0
        maybe.maybe_build(job_ctx, job.module, job.version, kver, arch)
        maybe.maybe_install(job_ctx, job.module, job.version, kver, arch)
        return 0

    def depends(job: Job) -> list[str]:
        # in the template's order, as upstream runs them; a BUILD_DEPENDS earlier in it is waited for
        if tree.is_broken(ctx.layout, job.module, job.version):
            return []
        try:
            conf = read_conf(ctx.fork(BufferConsole(quiet=True)), job.module, job.version, kver, arch, or_die=False)
        except DkmsError:
            return []
        return list(conf.build_depends) if conf.ok else []

    _raise_first(runner.run(ctx, planner.graph(jobs, depends, lambda job: False), body))
