"""``dkms autoinstall`` and the kernel_preinst/postinst/prerm hooks."""

from __future__ import annotations

from dkms_hooks import actions, ccprobe, signing, tree
from dkms_hooks.context import Context
from dkms_hooks.errors import EXIT_SKIPPED, DkmsError, SilentExit
from dkms_hooks.kernel import ver_key


def latest_versions(ctx: Context) -> list[tuple[str, str]]:
    """The newest version of each known module, in the order modules were first seen."""
    latest: dict[str, str] = {}
    for e in tree.status_entries(ctx.layout):
        if e.state is tree.State.broken:
            ctx.console.error(f"{e.module}/{e.version} is broken! Missing the source directory or the symbolic "
                              "link pointing to it.", "Manual intervention is required!")
            continue
        if e.module not in latest or ver_key(e.version) > ver_key(latest[e.module]):
            latest[e.module] = e.version
    return list(latest.items())


def autoinstall(ctx: Context) -> int:
    """Returns how many modules were installed (upstream's post_transaction guard)."""
    console = ctx.console
    if ctx.layout.no_autoinstall_flag.is_file():
        console.print("Automatic installation of modules has been disabled.")
        return 0
    kver, arch = ctx.options.kernels[0], ctx.options.arches[0]
    known = latest_versions(ctx)
    installed: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    to_install: list[tuple[str, str]] = []
    depends: dict[str, list[str]] = {}
    for m, v in known:
        if tree.is_active(ctx.layout, m, v, kver, arch):
            installed.append(m)
            continue
        conf = ctx.read_conf(m, v, kver, arch, str(ctx.layout.source_link(m, v) / "dkms.conf"))
        if not conf.autoinstall:
            continue
        to_install.append((m, v))
        depends[m] = list(conf.build_depends)
    if not to_install:
        return 0
    newly = 0
    if ctx.budget() > 1 and len(to_install) > 1:
        outcome = _run_parallel(ctx, to_install, depends, kver, arch, installed, skipped)
    else:
        outcome = _run_serial(ctx, to_install, depends, kver, arch, installed, skipped)
    newly, failed, to_install = outcome
    if installed:
        console.print(f"Autoinstall on {kver} succeeded for module(s) {' '.join(installed)}.")
    if skipped:
        console.print(f"Autoinstall on {kver} was skipped for module(s) {' '.join(skipped)}.")
    if failed:
        console.print(f"Autoinstall on {kver} failed for module(s) {' '.join(failed)}.")
    known_names = {m for m, _ in known}
    unresolved: list[str] = []
    deferred: list[str] = []
    for m, v in to_install:
        real = [d for d in depends[m] if d in known_names]
        later = [d for d in depends[m] if d not in known_names]
        if real:
            console.print(f"{m}/{v} autoinstall failed due to missing dependencies:{''.join(' ' + d for d in real)}.")
            unresolved.append(f"{m}/{v}")
        else:
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


def _install_one(ctx: Context, m: str, v: str, kver: str, arch: str) -> int:
    ctx.console.print(f"Autoinstall of module {m}/{v} for kernel {kver} ({arch})")
    status = 0
    with ctx.subshell():
        try:
            actions.maybe_install(ctx, m, v, kver, arch)
        except DkmsError as e:
            report(ctx, e)
            status = e.code
    ctx.console.print("")
    return status


def _run_serial(ctx: Context, to_install: list[tuple[str, str]], depends: dict[str, list[str]], kver: str,
                arch: str, installed: list[str], skipped: list[str]) -> tuple[int, list[str], list[tuple[str, str]]]:
    """Upstream's rounds: install what has no pending dependency, again until nothing moves."""
    newly = 0
    failed: list[str] = []
    while True:
        progress = 0
        waiting: list[tuple[str, str]] = []
        for m in depends:
            depends[m] = [d for d in depends[m] if d not in installed and d not in skipped]
        for m, v in to_install:
            if depends[m]:
                waiting.append((m, v))
                continue
            if not tree.is_built(ctx.layout, m, v, kver, arch):
                signing.prepare_kernel_and_signing(ctx, kver, arch)
            status = _install_one(ctx, m, v, kver, arch)
            if status == 0:
                installed.append(m)
                newly += 1
                progress += 1
            elif status == EXIT_SKIPPED:
                skipped.append(m)
                progress += 1
            else:
                failed.append(f"{m}({status})")
        to_install = waiting
        if progress == 0:
            return newly, failed, to_install


def _run_parallel(ctx: Context, to_install: list[tuple[str, str]], depends: dict[str, list[str]], kver: str,
                  arch: str, installed: list[str], skipped: list[str]) -> tuple[int, list[str], list[tuple[str, str]]]:
    """The same work as _run_serial with independent modules built side by side in one
    job budget; output printed in the order the serial rounds would print it."""
    from dkms_hooks import scheduler

    names = [m for m, _ in to_install]
    pending = {m: [d for d in depends[m] if d not in installed and d not in skipped] for m in names}
    # upstream's rounds, assuming every install succeeds; what never becomes ready (a
    # dependency outside this run that is not installed, or a cycle) is not run at all
    rounds: dict[str, int] = {}
    n = 0
    while True:
        ready = [m for m in names if m not in rounds and all(d in rounds for d in pending[m])]
        if not ready:
            break
        for m in ready:
            rounds[m] = n
        n += 1
    order = sorted((i for i, m in enumerate(names) if m in rounds), key=lambda i: (rounds[names[i]], i))
    jobs = [to_install[i] for i in order]
    index = {m: k for k, (m, _) in enumerate(jobs)}

    prologue = scheduler.BufferConsole(quiet=ctx.console.quiet)
    first_build = next((n for n, (m, v) in enumerate(jobs) if not tree.is_built(ctx.layout, m, v, kver, arch)), None)
    if first_build is not None:
        real = ctx.console
        ctx.console = prologue
        try:
            signing.prepare_kernel_and_signing(ctx, kver, arch)
        finally:
            ctx.console = real
    jobserver = scheduler.JobServer(ctx.budget())
    ctx.conf_memo = {}

    def run_one(job: tuple[str, str], console: scheduler.BufferConsole) -> int:
        m, v = job
        if index[m] == first_build:
            console.items.extend(prologue.items)
        job_ctx = ctx.fork(console, jobserver)
        return _install_one(job_ctx, m, v, kver, arch)

    def blocked(job: tuple[str, str], dep_results: list[int]) -> bool:
        return any(r not in (0, EXIT_SKIPPED) for r in dep_results)

    try:
        from dkms_hooks import progress

        live = progress.for_context(ctx, [f"{m}/{v} for {kver}" for m, v in jobs])
        with ccprobe.for_transaction(ctx, [kver] * len(jobs)):
            results = scheduler.run_jobs(jobs, lambda n: {index[d] for d in pending[jobs[n][0]]}, run_one,
                                         budget=ctx.budget(), console=ctx.console, jobserver=jobserver,
                                         blocked=blocked, progress=live)
    finally:
        jobserver.close()
    newly = 0
    failed: list[str] = []
    left: list[tuple[str, str]] = []
    for (m, v), status in zip(jobs, results):
        if status is None:
            continue
        if status == 0:
            installed.append(m)
            newly += 1
        elif status == EXIT_SKIPPED:
            skipped.append(m)
        else:
            failed.append(f"{m}({status})")
    ran = {m for (m, _), r in zip(jobs, results) if r is not None}
    for m, v in to_install:
        if m not in ran:
            left.append((m, v))
            depends[m] = [d for d in depends[m] if d not in installed and d not in skipped]
    return newly, failed, left


def report(ctx: Context, e: DkmsError) -> None:
    """Print an error the way upstream's die does, without ending the run."""
    from dkms_hooks.errors import DkmsWarnExit

    for line in e.preamble:
        ctx.console.print(line)
    if isinstance(e, SilentExit):
        return
    if isinstance(e, DkmsWarnExit):
        ctx.console.warn(*e.lines)
    else:
        ctx.console.error(*e.lines)


def _unbuild_for_kernel(ctx: Context, action: str, *, autoinstall_only: bool) -> None:
    kver, arch = ctx.options.kernels[0], ctx.options.arches[0]
    failed = ""
    for m, v in tree.module_versions(ctx.layout):
        if not tree.is_built(ctx.layout, m, v, kver, arch):
            continue
        if autoinstall_only:
            conf = ctx.read_conf(m, v, kver, arch, str(ctx.layout.source_link(m, v) / "dkms.conf"))
            if not conf.autoinstall:
                continue
        ctx.console.eprint(f"dkms: removing module {m}/{v} for kernel {kver} ({arch})")
        with ctx.subshell():
            try:
                actions.unbuild_module(ctx, m, v, delayed_depmod=True)
            except DkmsError as e:
                report(ctx, e)
                failed += f" {m}/{v}({e.code})"
        if not autoinstall_only:
            ctx.console.print("")
    pending = ctx.layout.dkms_tree / f"depmod-pending-{kver}-{arch}"
    if pending.exists():
        pending.unlink()
        from dkms_hooks import depmod, steps

        # upstream means to run depmod once here and, by a slip, never does; we do
        steps.invoke_python(ctx, f"do_depmod {kver}", "Running depmod", lambda: depmod.do_depmod(ctx, kver))
    kdir = ctx.layout.install_tree / kver
    if kdir.is_dir():
        from dkms_hooks import install

        install.remove_empty_dirs(kdir)
    if failed:
        raise DkmsError(14, f"dkms {action} for kernel {kver} ({arch}) failed for module(s){failed}.")


def kernel_preinst(ctx: Context) -> None:
    _unbuild_for_kernel(ctx, "kernel_preinst", autoinstall_only=True)


def kernel_prerm(ctx: Context) -> None:
    _unbuild_for_kernel(ctx, "kernel_prerm", autoinstall_only=False)


