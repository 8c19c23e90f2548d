"""``dkms plan --build``: real builds in a throwaway dkms tree. The scratch tree links the
module sources and the kernels' headers, builds every job in the transaction's job budget,
marks what built as active there (so a dependent's BUILD_DEPENDS are met without running
install scripts), and is deleted at the end: nothing is installed, the real trees are only read."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from dkms_hooks.model.context import Context, Signing, TxState
from dkms_hooks.model.jobs import Job
from dkms_hooks.ops import build, buildrecord, signing
from dkms_hooks.system.console import BufferConsole
from dkms_hooks.system.errors import EXIT_INTERNAL, DkmsError, report
from dkms_hooks.transaction import planner, runner
from dkms_hooks.transaction.plan import Item, Verdict

#: lines of a failed build's make.log shown in the report
LOG_TAIL = 20


def _wanted(items: list[Item]) -> list[Item]:
    """What to try: what would build, and what is known to fail (it may build now)."""
    return [i for i in items if i.named and (
        i.verdict is Verdict.would_build
        or (i.verdict is Verdict.blocked and all(r.code == "known-failing" for r in i.reasons)))]


def _jobs(ctx: Context, items: list[Item], wanted: list[Item]) -> list[Job]:
    """The wanted builds and, before them, the BUILD_DEPENDS they need, per kernel."""
    by_key = {(i.module, i.kernel, i.arch): i for i in items if i.newest}
    jobs: list[Job] = []

    def add(i: Item, seen: set[str]) -> None:
        if i.module in seen:
            return
        seen.add(i.module)
        for dep in i.depends:
            d = by_key.get((dep, i.kernel, i.arch))
            if d is not None:
                add(d, seen)
        job = Job(i.module, i.version, i.kernel, i.arch)
        if job not in jobs:
            jobs.append(job)

    for i in wanted:
        add(i, set())
    return jobs


def _scratch_context(ctx: Context, root: Path, jobs: list[Job]) -> Context:
    real = ctx.layout
    layout = real.with_trees(dkms_tree=root / "dkms", source_tree=root / "src", install_tree=root / "modules",
                             tmp=root / "tmp")
    for d in (layout.dkms_tree, layout.source_tree, layout.install_tree, layout.tmp):
        d.mkdir(parents=True)
    for m, v, kver, arch in ((j.module, j.version, j.kver, j.arch) for j in jobs):
        vdir = layout.version_dir(m, v)
        if not vdir.is_dir():
            vdir.mkdir(parents=True)
            (vdir / "source").symlink_to(os.path.realpath(real.source_link(m, v)))
        kdir = layout.install_tree / kver
        if not kdir.is_dir():
            kdir.mkdir()
            (kdir / "build").symlink_to(os.path.realpath(ctx.kernel(kver, arch).source_dir))
    # sign with the tree's own key when it has one, rather than make a new pair every time
    for src, dst in ((real.mok_key, layout.mok_key), (real.mok_cert, layout.mok_cert)):
        if src.is_file():
            dst.symlink_to(src)
    options = dataclasses.replace(ctx.options, force=False, no_depmod=True, kernels=(), arches=())
    return dataclasses.replace(ctx, layout=layout, options=options).in_transaction(TxState(depmod_batch=set()))


def _key_pair_ready(ctx: Context, kver: str, arch: str) -> bool:
    """Whether preparing signing in the scratch tree writes nothing outside it: a missing
    configured key (or Ubuntu's MOK) would be generated in place, so then no signing."""
    try:
        values = signing.read_signing_settings(ctx, ctx.kernel(kver, arch))
    except DkmsError:
        return False
    key, cert = values.get("mok_signing_key", ""), values.get("mok_certificate", "")
    if not key and ctx.distro.startswith("ubuntu"):
        key, cert = map(os.fspath, ctx.layout.ubuntu_mok)
    if key.startswith("pkcs11:"):
        return True
    return all(os.path.isfile(p) for p in (key, cert) if p)


def _log_tail(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in f.readlines()[-LOG_TAIL:]]
    except OSError:
        return []


def _prepare_signing(ctx: Context, kver: str, arch: str) -> None:
    """Signing for the scratch builds, prepared without a word: with the key pair in place,
    else none (see _key_pair_ready); an error is the build's to report."""
    if not _key_pair_ready(ctx, kver, arch):
        ctx.shell.signing = Signing(False)
        return
    quiet = ctx.fork(BufferConsole(quiet=True))
    try:
        signing.prepare_kernel_and_signing(quiet, kver, arch)
    except DkmsError:
        return
    ctx.shell.signing = quiet.shell.signing


def try_builds(ctx: Context, items: list[Item], *, quiet: bool) -> None:
    """Build what ``items`` say would build, in a scratch tree; each item gets ``build``."""
    wanted = _wanted(items)
    jobs = _jobs(ctx, items, wanted)
    if not jobs:
        return
    depends = {Job(i.module, i.version, i.kernel, i.arch): i.depends for i in items}
    root = Path(tempfile.mkdtemp(prefix="dkms-plan.", dir=ctx.layout.tmp))
    results: dict[Job, dict[str, object]] = {}
    try:
        sctx = _scratch_context(ctx, root, jobs)
        if quiet:
            sctx = sctx.fork(BufferConsole(quiet=True))

        def body(jctx: Context, job: Job) -> int:
            jctx.console.print(f"==> scratch build of {job.module}/{job.version} for kernel {job.kver} ({job.arch})")
            start = time.monotonic()
            code = 0
            try:
                with jctx.subshell():
                    build.do_build(jctx, job.module, job.version, job.kver, job.arch)
                # active in the scratch tree: dependents find their BUILD_DEPENDS installed
                os.symlink(f"{job.version}/{job.kver}/{job.arch}", jctx.layout.active_link(job.module, job.kver,
                                                                                             job.arch))
                results[job] = {"result": "ok", "exit": 0, "message": ""}
            except DkmsError as e:
                report(jctx.console, e)
                code = e.code
                record = buildrecord.read(jctx, job.module, job.version, job.kver, job.arch)
                results[job] = {"result": "failed", "exit": e.code, "message": e.lines[0] if e.lines else "",
                                "log_tail": _log_tail(record.log) if record is not None and record.log else []}
            except Exception as e:  # noqa: BLE001 - one job's bug is that job's result
                code = EXIT_INTERNAL
                results[job] = {"result": "failed", "exit": code, "message": f"internal error: {e!r}",
                                "log_tail": []}
            results[job]["seconds"] = round(time.monotonic() - start, 1)
            return code

        # no private build directories: each scratch module builds for one kernel at a time
        plan = planner.graph(jobs, lambda job: depends.get(job, []), lambda job: False)
        for r in runner.run(sctx, plan, body, presign=runner.Presign.first, prepare=_prepare_signing):
            if r.code is None:
                results[r.job] = {"result": "not-run", "exit": None, "message": "a BUILD_DEPENDS failed to build"}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for i in wanted:
        i.build = results.get(Job(i.module, i.version, i.kernel, i.arch))
