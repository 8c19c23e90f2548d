"""The one way jobs run: a planned graph, one job after another when the budget is one job,
else side by side in one jobserver; a job's output is printed whole, in the order a serial
run prints it. What differs between callers comes in as arguments: what one job does, how
signing is prepared, and what to do as each job ends."""

from __future__ import annotations

import threading
from collections.abc import Callable

from dkms_hooks.model import tree
from dkms_hooks.model.context import Context
from dkms_hooks.model.jobs import Job, Ran, finished
from dkms_hooks.ops import ccprobe, signing
from dkms_hooks.system import progress
from dkms_hooks.system.compat import StrEnum
from dkms_hooks.system.console import BufferConsole
from dkms_hooks.system.errors import EXIT_INTERNAL, DkmsError, report
from dkms_hooks.transaction import scheduler
from dkms_hooks.transaction.planner import Graph

#: what one job does; returns its exit code (0, EXIT_SKIPPED, or a failure)
Body = Callable[[Context, Job], int]
#: the runner's own wrapper of a body: a job by its index, its errors kept
Guarded = Callable[[Context, int], int]
#: signing for a kernel, prepared before its builds
Prepare = Callable[[Context, str, str], None]


class Presign(StrEnum):
    #: each build prepares its own signing (upstream's build and install over kernels)
    none = "none"
    #: before the first build, in the run's order; an error ends the run (upstream's autoinstall)
    first = "first"
    #: beside the first builds, which wait for it only when they come to sign; an error is
    #: printed and each build then meets it itself (host events, plan --build)
    beside = "beside"


def side_by_side(ctx: Context, plan: Graph) -> bool:
    """Whether the jobs run at once (a budget of more than one job, more than one job)."""
    return ctx.budget() > 1 and len(plan.jobs) > 1


def run(ctx: Context, plan: Graph, body: Body, *, presign: Presign = Presign.none,
        prepare: Prepare = signing.prepare_kernel_and_signing,
        on_done: Callable[[int, int], None] | None = None) -> list[Ran]:
    """What became of each job, in the plan's order: its exit code (None when a job it
    needs failed), and the error it ended with when ``body`` let one out (not printed: the
    caller's view says it). ``on_done(i, code)`` is called as each job ends, in its thread
    and holding its token: work done there (a kernel's depmod once its last job is done)
    counts in the budget."""
    jobs = plan.jobs
    if not jobs:
        return []
    errors: dict[int, DkmsError] = {}

    def guarded(job_ctx: Context, i: int) -> int:
        try:
            return body(job_ctx, jobs[i])
        except DkmsError as e:
            errors[i] = e
            return e.code or 1
        except Exception as e:  # noqa: BLE001 - one job's bug must not stop the others
            job_ctx.console.error(f"internal error in {jobs[i].label}: {e!r}")
            return EXIT_INTERNAL

    first = plan.first_to_build(lambda j: tree.is_built(ctx.layout, j.module, j.version, j.kver, j.arch))
    kernels = dict.fromkeys((j.kver, j.arch) for j in jobs[first:]) if first is not None else {}
    memo = ctx.tx.conf_memo
    if memo is None:
        ctx.tx.conf_memo = {}  # the jobs read each dkms.conf once between them
    try:
        with ccprobe.for_transaction(ctx, (j.kver for j in jobs)):
            if side_by_side(ctx, plan):
                codes = _parallel(ctx, plan, guarded, presign, prepare, first, kernels, on_done)
            else:
                codes = _serial(ctx, plan, guarded, presign, prepare, first, on_done)
    finally:
        ctx.tx.conf_memo = memo
    return [Ran(job, code, errors.get(i)) for i, (job, code) in enumerate(zip(jobs, codes))]


def _serial(ctx: Context, plan: Graph, body: Guarded, presign: Presign, prepare: Prepare, first: int | None,
            on_done: Callable[[int, int], None] | None) -> list[int | None]:
    results: list[int | None] = []
    for i, job in enumerate(plan.jobs):
        if _blocked([results[d] for d in plan.needs[i]]):
            results.append(None)
            continue
        if presign is not Presign.none and first is not None and i >= first \
                and not tree.is_built(ctx.layout, job.module, job.version, job.kver, job.arch):
            _prepare(ctx, prepare, job.kver, job.arch, fatal=presign is Presign.first)
        code = body(ctx, i)
        results.append(code)
        if on_done is not None:
            on_done(i, code)
    return results


def _parallel(ctx: Context, plan: Graph, body: Guarded, presign: Presign, prepare: Prepare, first: int | None,
              kernels: dict[tuple[str, str], None], on_done: Callable[[int, int], None] | None) -> list[int | None]:
    prologue = BufferConsole(quiet=ctx.console.quiet)
    ready: threading.Event | None = None
    if presign is not Presign.none and first is not None:

        def prepare_all() -> None:
            for kver, arch in kernels:
                kctx = ctx.fork(prologue)
                _prepare(kctx, prepare, kver, arch, fatal=presign is Presign.first)
                if kctx.shell.signing is not None:
                    ctx.tx.presigned[f"{kver}/{arch}"] = kctx.shell.signing

        if presign is Presign.first:
            prepare_all()
        else:
            ready = threading.Event()

            def beside() -> None:
                try:
                    prepare_all()
                finally:
                    assert ready is not None
                    ready.set()

            threading.Thread(target=beside, daemon=True).start()
    jobserver = scheduler.JobServer(ctx.budget())
    private = ctx.tx.private_builds
    ctx.tx.private_builds = plan.repeats_modules

    def run_one(i: int, console: BufferConsole) -> int:
        job_ctx = ctx.fork(console, jobserver, ready)
        try:
            return body(job_ctx, i)
        finally:
            if i == first:
                if ready is not None:
                    ready.wait()
                console.items[:0] = prologue.items

    live = progress.for_console(ctx.console, ctx.env, [j.label for j in plan.jobs])
    try:
        return scheduler.run_jobs(list(range(len(plan.jobs))), plan.deps, run_one, budget=ctx.budget(),
                                  console=ctx.console, jobserver=jobserver,
                                  blocked=lambda i, res: _blocked([res[d] for d in plan.needs[i]]),
                                  on_done=on_done, progress=live)
    finally:
        jobserver.close()
        ctx.tx.private_builds = private


def _blocked(needed: list[int | None]) -> bool:
    """A job does not run when a job it needs failed or did not run (a module skipped by
    BUILD_EXCLUSIVE counts as done: upstream's autoinstall goes on past it)."""
    return not all(map(finished, needed))


def _prepare(ctx: Context, prepare: Prepare, kver: str, arch: str, *, fatal: bool) -> None:
    try:
        prepare(ctx, kver, arch)
    except DkmsError as e:
        if fatal:
            raise
        report(ctx.console, e)
