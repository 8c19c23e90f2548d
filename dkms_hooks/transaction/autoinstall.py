"""``dkms autoinstall`` and the kernel_preinst/postinst/prerm verbs: upstream's text and exit
codes over the one planner and runner."""

from __future__ import annotations

from dkms_hooks.model import tree
from dkms_hooks.model.context import Context
from dkms_hooks.model.jobs import Job
from dkms_hooks.ops import depmod, install, maybe, steps
from dkms_hooks.system.errors import EXIT_SKIPPED, DkmsError, report
from dkms_hooks.transaction import kernelwide, planner, runner


def autoinstall(ctx: Context) -> int:
    """Returns how many modules were installed (upstream's post_transaction guard)."""
    console = ctx.console
    if ctx.layout.no_autoinstall_flag.is_file():
        console.print("Automatic installation of modules has been disabled.")
        return 0
    kver, arch = ctx.options.kernels[0], ctx.options.arches[0]
    known = kernelwide.latest_versions(ctx)
    installed: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    candidates: dict[str, str] = {}
    depends: dict[str, list[str]] = {}
    for m, v in known:
        if tree.is_active(ctx.layout, m, v, kver, arch):
            installed.append(m)
            continue
        conf = kernelwide.registered_conf(ctx, m, v, kver, arch)
        if not conf.autoinstall:
            continue
        candidates[m] = v
        depends[m] = list(conf.build_depends)
    if not candidates:
        return 0
    ready = set(installed)
    # upstream's rounds, as if every install succeeds; what never becomes ready (a
    # dependency that is not installed and not in this run, or a cycle) does not run
    order, _ = planner.build_order(depends, ready.__contains__)
    jobs = [Job(m, candidates[m], kver, arch) for m in order]
    plan = planner.graph(jobs, lambda job: depends[job.module], lambda job: False)

    def body(job_ctx: Context, job: Job) -> int:
        job_ctx.console.print(f"Autoinstall of module {job.module}/{job.version} for kernel {kver} ({arch})")
        status = 0
        with job_ctx.subshell():
            try:
                maybe.maybe_install(job_ctx, job.module, job.version, kver, arch)
            except DkmsError as e:
                report(job_ctx.console, e)
                status = e.code
        job_ctx.console.print("")
        return status

    outcomes = runner.run(ctx, plan, body, presign=runner.Presign.first)
    newly = 0
    for r in outcomes:
        if r.code is None:
            continue
        if r.code == 0:
            installed.append(r.job.module)
            newly += 1
        elif r.code == EXIT_SKIPPED:
            skipped.append(r.job.module)
        else:
            failed.append(f"{r.job.module}({r.code})")
    if installed:
        console.print(f"Autoinstall on {kver} succeeded for module(s) {' '.join(installed)}.")
    if skipped:
        console.print(f"Autoinstall on {kver} was skipped for module(s) {' '.join(skipped)}.")
    if failed:
        console.print(f"Autoinstall on {kver} failed for module(s) {' '.join(failed)}.")
    ran = {r.job.module for r in outcomes if r.code is not None}
    unresolved: list[str] = []
    deferred: list[str] = []
    known_names = {m for m, _ in known}
    for m, v in candidates.items():
        if m in ran:
            continue
        waiting = [d for d in depends[m] if d not in installed and d not in skipped]
        real = [d for d in waiting if d in known_names]
        if real:
            console.print(f"{m}/{v} autoinstall failed due to missing dependencies:{''.join(' ' + d for d in real)}.")
            unresolved.append(f"{m}/{v}")
        else:
            later = [d for d in waiting if d not in known_names]
            console.print(f"{m}/{v} autoinstall deferred: BUILD_DEPENDS not registered with DKMS:"
                          f"{''.join(' ' + d for d in later)}.")
            deferred.append(f"{m}/{v}")
    if deferred:
        console.print(f"Autoinstall on {kver} deferred module(s) {' '.join(deferred)} due to BUILD_DEPENDS not "
                      "yet registered with DKMS.")
        console.print("These may be provided externally or by a package not yet configured; autoinstall will "
                      "retry on the next trigger.")
    if failed or unresolved:
        raise DkmsError(11, "One or more modules failed to install during autoinstall.",
                        "Refer to previous errors for more information.")
    return newly


def _unbuild_for_kernel(ctx: Context, action: str, *, autoinstall_only: bool) -> None:
    kver, arch = ctx.options.kernels[0], ctx.options.arches[0]
    ctx.tx.depmod_batch = set()
    try:
        removals = kernelwide.unbuild_for_kernel(
            ctx, kver, arch, autoinstall_only=autoinstall_only, gap=not autoinstall_only,
            say="dkms: removing module {module}/{version} for kernel {kver} ({arch})")
        owed = bool(ctx.tx.depmod_batch)
    finally:
        ctx.tx.depmod_batch = None
    if owed:
        # once for the kernel, after every module is off it (upstream means to, and by a slip never does)
        steps.invoke_python(ctx, f"do_depmod {kver}", "Running depmod", lambda: depmod.do_depmod(ctx, kver))
    kdir = ctx.layout.install_tree / kver
    if kdir.is_dir():
        install.remove_empty_dirs(kdir)
    failed = "".join(f" {r.module}/{r.version}({r.error.code})" for r in removals if r.error is not None)
    if failed:
        raise DkmsError(14, f"dkms {action} for kernel {kver} ({arch}) failed for module(s){failed}.")


def kernel_preinst(ctx: Context) -> None:
    _unbuild_for_kernel(ctx, "kernel_preinst", autoinstall_only=True)


def kernel_prerm(ctx: Context) -> None:
    _unbuild_for_kernel(ctx, "kernel_prerm", autoinstall_only=False)
