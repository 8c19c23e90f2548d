"""One entry for host events. The engine works out the (module, kernel) jobs itself, runs
each with its failure kept to itself, runs depmod and the initramfs generator at most once
per kernel, and always ends with a summary of what happened to every job."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from dkms_hooks import actions, autoinstall, ccprobe, depmod, signing, tree
from dkms_hooks.buildrecord import keep_failed_log
from dkms_hooks.compat import StrEnum
from dkms_hooks.context import Context
from dkms_hooks.errors import EXIT_SKIPPED, DkmsError
from dkms_hooks.events import CHANGES, Event, merge
from dkms_hooks.kernel import version_sort_key


class Outcome(StrEnum):
    installed = "installed"
    current = "up to date"
    removed = "removed"
    added = "added"
    skipped = "skipped"
    failed = "failed"


#: the colour of an outcome in the summary, on a terminal
_KIND = {Outcome.installed: "ok", Outcome.current: "ok", Outcome.skipped: "skipped", Outcome.failed: "failed"}


@dataclass(frozen=True)
class Record:
    module: str
    version: str
    kver: str
    outcome: Outcome
    reason: str = ""
    log: str = ""
    critical: bool = False


@dataclass
class Transaction:
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, record: Record) -> None:
        self.records.append(record)

    @property
    def failed_critical(self) -> list[Record]:
        return [r for r in self.records if r.outcome is Outcome.failed and r.critical]


def kernels_with_headers(ctx: Context) -> list[str]:
    """Every kernel whose headers are here, newest first (not just the running one, so
    chroots and image builds work)."""
    tree_dir = ctx.layout.install_tree
    try:
        names = [k for k in os.listdir(tree_dir) if (tree_dir / k / "build/include").is_dir()]
    except OSError:
        return []
    return sorted(names, key=version_sort_key, reverse=True)


def _ordered(deps: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Modules in BUILD_DEPENDS order, and the ones caught in a cycle."""
    done: list[str] = []
    pending = dict(deps)
    while pending:
        ready = [m for m, d in pending.items() if all(x in done or x not in deps for x in d)]
        if not ready:
            return done, sorted(pending)
        for m in ready:
            done.append(m)
            del pending[m]
    return done, []


class Engine:
    def __init__(self, ctx: Context, pm: pluggy.PluginManager, *, initramfs_follows: bool = False) -> None:
        self.ctx = ctx
        self.pm = pm
        #: the host regenerates the initramfs after us (kernel-install, a kernel's postinst)
        self.initramfs_follows = initramfs_follows
        #: (kernel, changed modules) -> whether any of them is inside the current image
        self._inside: dict[tuple[str, tuple[str, ...]], bool] = {}
        self.tx = Transaction()
        self.done: set[tuple[str, str, str]] = set()
        self.queue: list[tuple[str, str, str, str]] = []
        #: depmod already run while other jobs were building: kernel -> exit code
        self.early_depmod: dict[str, int] = {}
        self._deps: dict[tuple[str, str], list[str]] = {}
        ctx.depmod_batch = set()
        ctx.conf_memo = {}

    # --- jobs --------------------------------------------------------------------------
    def _critical(self, module: str) -> bool:
        return module in self.ctx.hooks.critical_modules

    def _run_job(self, ctx: Context, module: str, version: str, kver: str, arch: str) -> int:
        ctx.console.print(f"==> {module}/{version} for kernel {kver} ({arch})")
        if tree.is_installed(ctx.layout, module, version, kver, arch):
            self.tx.add(Record(module, version, kver, Outcome.current, critical=self._critical(module)))
            return 0
        try:
            if not tree.is_built(ctx.layout, module, version, kver, arch):
                signing.prepare_kernel_and_signing(ctx, kver, arch)
            with ctx.subshell():
                self._replace_or_install(ctx, module, version, kver, arch)
        except DkmsError as e:
            autoinstall.report(ctx, e)
            if e.code == EXIT_SKIPPED:
                self.tx.add(Record(module, version, kver, Outcome.skipped,
                                   "BUILD_EXCLUSIVE does not match this kernel", critical=self._critical(module)))
                return EXIT_SKIPPED
            log = keep_failed_log(ctx, module, version, kver, arch)
            self.tx.add(Record(module, version, kver, Outcome.failed, f"exit {e.code}: {e.lines[0] if e.lines else ''}",
                               os.fspath(log) if log else "", self._critical(module)))
            return e.code
        except Exception as e:  # noqa: BLE001 - one module's bug must not stop the others
            self.tx.add(Record(module, version, kver, Outcome.failed, f"internal error: {e!r}",
                               critical=self._critical(module)))
            return 70
        self.tx.add(Record(module, version, kver, Outcome.installed, critical=self._critical(module)))
        return 0

    @staticmethod
    def _replace_or_install(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
        """Install; where another version of the module is installed for the kernel (a
        package upgrade whose old version goes later in the transaction, Portage's order),
        the new one replaces it once built: the old one's file would otherwise fail the
        version check whenever the module's own version string did not change. If the new
        one cannot be installed, the old one goes back."""
        others = [w for _, w in tree.module_versions(ctx.layout, module)
                  if w != version and tree.is_installed(ctx.layout, module, w, kver, arch)]
        if not others:
            actions.maybe_install(ctx, module, version, kver, arch)
            return
        actions.maybe_build(ctx, module, version, kver, arch)
        for w in others:
            actions.maybe_uninstall(ctx, module, w, kver, arch)
        try:
            actions.maybe_install(ctx, module, version, kver, arch)
        except DkmsError:
            for w in others:
                actions.maybe_install(ctx, module, w, kver, arch)
            raise

    def _autoinstall_set(self, kver: str, arch: str, only: set[str] | None = None,
                         always: bool = False) -> list[tuple[str, str]]:
        ctx = self.ctx
        chosen: dict[str, str] = {}
        deps: dict[str, list[str]] = {}
        for m, v in autoinstall.latest_versions(ctx):
            if only is not None and m not in only:
                continue
            try:
                with ctx.subshell():
                    conf = ctx.read_conf(m, v, kver, arch, str(ctx.layout.source_link(m, v) / "dkms.conf"))
            except DkmsError as e:
                self.tx.add(Record(m, v, kver, Outcome.failed, f"invalid dkms.conf (exit {e.code})",
                                   critical=self._critical(m)))
                continue
            if not conf.autoinstall and not (always and only is not None):
                continue
            chosen[m] = v
            deps[m] = conf.build_depends
            self._deps[(m, kver)] = conf.build_depends
        order, cycle = _ordered(deps)
        for m in cycle:
            self.tx.add(Record(m, chosen[m], kver, Outcome.failed,
                               f"circular BUILD_DEPENDS: {' '.join(deps[m])}", critical=self._critical(m)))
        return [(m, chosen[m]) for m in order]

    def _headers_missing(self, kver: str) -> None:
        hint = self.ctx.headers_hint(kver)
        self.tx.notes.append(f"kernel {kver}: no headers at {self.ctx.layout.install_tree}/{kver}/build, nothing "
                             f"built" + (f" (install {hint})" if hint else ""))

    def install_for_kernels(self, kernels: Iterable[str], only: set[str] | None = None,
                            always: bool = False) -> None:
        """Queue the install jobs for these kernels; ``run_queued`` runs them all at once.
        ``always``: the modules ``only`` names are built even without AUTOINSTALL."""
        arch = self.ctx.options.arches[0] if self.ctx.options.arches else os.uname().machine
        for kver in kernels:
            if not (self.ctx.layout.install_tree / kver / "build/include").is_dir():
                self._headers_missing(kver)
                continue
            for m, v in self._autoinstall_set(kver, arch, only, always):
                if (m, v, kver) not in self.done:
                    self.done.add((m, v, kver))
                    self.queue.append((m, v, kver, arch))

    def run_queued(self) -> None:
        """Run the queued jobs: one graph for the whole transaction. A module's BUILD_DEPENDS
        come before it on each kernel; a module's jobs for several kernels run side by side
        when each can build in a directory of its own, else one after another (they share
        its build directory); everything else runs side by side in the job budget."""
        jobs, self.queue = self.queue, []
        if not jobs:
            return
        with ccprobe.for_transaction(self.ctx, (k for _, _, k, _ in jobs)):
            self._run_jobs(self._slow_depmod_first(jobs))

    def _run_jobs(self, jobs: list[tuple[str, str, str, str]]) -> None:
        from dkms_hooks import scheduler

        ctx = self.ctx
        parallel = ctx.budget() > 1 and len(jobs) > 1
        ctx.private_builds = parallel
        private = [parallel and actions.own_build_dir(ctx, *job) for job in jobs]
        deps: list[set[int]] = []
        for i, (m, v, kver, arch) in enumerate(jobs):
            d = {j for j in range(i) if jobs[j][0] == m and not (private[i] and private[j])}
            conf_deps = self._deps.get((m, kver), [])
            d |= {j for j in range(i) if jobs[j][2] == kver and jobs[j][0] in conf_deps}
            deps.append(d)
        if not parallel:
            self._presign(ctx, jobs)
            for m, v, kver, arch in jobs:
                self._run_job(ctx, m, v, kver, arch)
            return
        # Signing is prepared once per kernel for the whole transaction while the first
        # builds already run (a first MOK key takes openssl half a second): a build waits
        # for it only when it comes to sign. Its lines print first, before the first job's.
        prologue = scheduler.BufferConsole(quiet=ctx.console.quiet)
        ready = threading.Event()

        def presign() -> None:
            try:
                self._presign(ctx.fork(prologue), jobs)
            finally:
                ready.set()

        presigning = threading.Thread(target=presign, daemon=True)
        presigning.start()
        jobserver = scheduler.JobServer(ctx.budget())

        def run_one(job: tuple[str, str, str, str], console: scheduler.BufferConsole) -> int:
            job_ctx = ctx.fork(console, jobserver)
            job_ctx.signing_ready = ready
            try:
                return self._run_job(job_ctx, *job)
            finally:
                if job is jobs[0]:
                    ready.wait()
                    console.items[:0] = prologue.items

        def blocked(job: tuple[str, str, str, str], results: list[int]) -> bool:
            return False  # a failed dependency fails the build itself (BUILD_DEPENDS, exit 13)

        # A kernel's depmod starts as soon as its last job is done, in the same budget, while
        # other kernels still build (the slowest depmod's kernel was put first).
        left = {k: sum(1 for j in jobs if j[2] == k) for _, _, k, _ in jobs}
        lock = threading.Lock()
        early: list[threading.Thread] = []

        def depmod_now(kver: str) -> None:
            jobserver.acquire()
            try:
                self.early_depmod[kver] = depmod.do_depmod(ctx.fork(scheduler.BufferConsole(True)), kver)
                # looking inside the kernel's initramfs (lsinitramfs: half a second) too
                if not self.initramfs_follows and (tool := self._initramfs_tool()):
                    self._needs_initramfs(tool, kver)
            finally:
                jobserver.release()

        def on_done(i: int, code: int) -> None:
            kver = jobs[i][2]
            batch = ctx.depmod_batch
            with lock:
                left[kver] -= 1
                start = left[kver] == 0 and batch is not None and kver in batch
                if start and batch is not None:
                    batch.discard(kver)
            if start:
                t = threading.Thread(target=depmod_now, args=(kver,), daemon=True)
                early.append(t)
                t.start()

        from dkms_hooks import progress

        live = progress.for_context(ctx, [f"{m}/{v} for {k}" for m, v, k, _ in jobs])
        try:
            scheduler.run_jobs(jobs, lambda i: deps[i], run_one, budget=ctx.budget(), console=ctx.console,
                               jobserver=jobserver, blocked=blocked, on_done=on_done, progress=live)
            for t in early:
                t.join()
        finally:
            jobserver.close()
            ctx.private_builds = False

    def _slow_depmod_first(self, jobs: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
        """The kernels whose depmod takes longest (a big installed module tree: seconds,
        where a headers-only kernel takes none) build first, so that depmod runs while the
        other kernels still build instead of alone at the end; then the newest kernel, the
        one most likely to boot next. A kernel's jobs keep their (BUILD_DEPENDS) order."""
        def weight(kver: str) -> int:
            try:  # depmod skips a kernel without modules.dep; a few modules cost nothing
                return (self.ctx.layout.install_tree / kver / "modules.dep").stat().st_size // 65536
            except OSError:
                return 0

        kernels = sorted({k for _, _, k, _ in jobs}, key=lambda k: (weight(k), version_sort_key(k)), reverse=True)
        rank = {k: i for i, k in enumerate(kernels)}
        return sorted(jobs, key=lambda job: rank[job[2]])

    def _presign(self, ctx: Context, jobs: list[tuple[str, str, str, str]]) -> None:
        for kver, arch in dict.fromkeys((k, a) for _, _, k, a in jobs):
            if any(not tree.is_built(ctx.layout, m, v, k, a) for m, v, k, a in jobs if k == kver):
                try:
                    signing.prepare_kernel_and_signing(ctx, kver, arch)
                    if ctx.signing is not None:
                        ctx.presigned[f"{kver}/{arch}"] = ctx.signing
                except DkmsError as e:
                    autoinstall.report(ctx, e)

    def unbuild_for_kernel(self, kver: str, *, autoinstall_only: bool) -> None:
        self.run_queued()  # events keep their order
        ctx = self.ctx
        arch = ctx.options.arches[0] if ctx.options.arches else os.uname().machine
        for m, v in tree.module_versions(ctx.layout):
            if not tree.is_built(ctx.layout, m, v, kver, arch):
                continue
            try:
                with ctx.subshell():
                    if autoinstall_only:
                        conf = ctx.read_conf(m, v, kver, arch, str(ctx.layout.source_link(m, v) / "dkms.conf"))
                        if not conf.autoinstall:
                            continue
                    ctx.console.print(f"==> removing {m}/{v} from kernel {kver} ({arch})")
                    actions.maybe_uninstall(ctx, m, v, kver, arch)
                    actions.maybe_unbuild(ctx, m, v, kver, arch)
            except DkmsError as e:
                autoinstall.report(ctx, e)
                self.tx.add(Record(m, v, kver, Outcome.failed, f"exit {e.code}", critical=self._critical(m)))
                continue
            self.tx.add(Record(m, v, kver, Outcome.removed))

    def add_sources(self, sources: Iterable[str]) -> set[str]:
        """Register module sources (name/version, or a directory holding dkms.conf)."""
        ctx = self.ctx
        names: set[str] = set()
        for item in sources:
            if "/" in item and not item.startswith("/"):
                m, v = item.split("/", 1)
            else:
                res = ctx.read_conf("", "", "", "", os.path.join(item, "dkms.conf"), or_die=False)
                m, v = res.package_name, res.package_version
                if not (m and v):
                    self.tx.add(Record(item, "", "", Outcome.failed,
                                       "its dkms.conf sets no PACKAGE_NAME and PACKAGE_VERSION"))
                    continue
                expected = ctx.layout.source_dir(m, v)
                if os.path.normpath(item) != os.path.normpath(expected):
                    self.tx.add(Record(m, v, "", Outcome.failed, f"its source is in {item}, but dkms reads "
                                       f"{m}/{v} from {expected}", critical=self._critical(m)))
                    continue
            names.add(m)
            # an upgrade replaced this module's source: registrations left without one go
            stale = [f"{m}/{old}" for mm, old in tree.module_versions(ctx.layout, m)
                     if old != v and tree.is_broken(ctx.layout, m, old)]
            if stale:
                self.remove_sources(stale)
            if tree.is_added(ctx.layout, m, v):
                continue
            try:
                with ctx.subshell():
                    actions.add_module(ctx, m, v)
                self.tx.add(Record(m, v, "", Outcome.added))
            except DkmsError as e:
                autoinstall.report(ctx, e)
                self.tx.add(Record(m, v, "", Outcome.failed, f"add failed (exit {e.code})", critical=self._critical(m)))
        return names

    def remove_sources(self, sources: Iterable[str]) -> None:
        self.run_queued()  # events keep their order
        ctx = self.ctx
        for item in sources:
            m, _, v = item.partition("/")
            versions = [v] if v else [vv for mm, vv in tree.module_versions(ctx.layout, m)]
            for ver in versions:
                if not tree.is_added(ctx.layout, m, ver) and not tree.is_broken(ctx.layout, m, ver):
                    continue
                ctx.options.module, ctx.options.version = m, ver
                saved = (list(ctx.options.kernels), list(ctx.options.arches), ctx.options.conf)
                if tree.is_broken(ctx.layout, m, ver):
                    # its source went away first: uninstall with the dkms.conf kept at add time
                    copy = ctx.layout.saved_conf(m, ver)
                    if not copy.is_file():
                        self.tx.add(Record(m, ver, "", Outcome.failed,
                                           "source gone and no saved dkms.conf: remove it by hand"))
                        continue
                    ctx.options.conf = str(copy)
                built = tree.built_entries(ctx.layout, m, ver)
                ctx.options.kernels = [e.kver for e in built]
                ctx.options.arches = [e.arch for e in built]
                try:
                    with ctx.subshell():
                        actions.remove_module(ctx)
                    self.tx.add(Record(m, ver, "", Outcome.removed))
                except DkmsError as e:
                    autoinstall.report(ctx, e)
                    self.tx.add(Record(m, ver, "", Outcome.failed, f"remove failed (exit {e.code})"))
                finally:
                    ctx.options.kernels, ctx.options.arches, ctx.options.conf = saved

    # --- one event, whole -------------------------------------------------------------------
    def apply(self, ev: Event) -> None:
        """Everything the event carries, removals before additions: kernels being
        reinstalled or removed, module sources that went, then sources that came (built for
        every kernel with headers that stays) and new kernels."""
        removed = list(ev.sources_removed)
        added = list(ev.sources_added)
        if ev.rescan:
            new, gone, changed = tree.sources_out_of_step(self.ctx.layout)
            removed += [f"{m}/{v}" for m, v in gone + changed]
            added += [f"{m}/{v}" for m, v in changed] + new
        for k in ev.kernels_reinstalling:
            self.unbuild_for_kernel(k, autoinstall_only=True)
        for k in ev.kernels_removed:
            self.unbuild_for_kernel(k, autoinstall_only=False)
        self.remove_sources(self._registrations(removed))
        names = self.add_sources(added)
        if names:
            kernels = list(dict.fromkeys([*ev.source_kernels, *kernels_with_headers(self.ctx)]))
            kernels = [k for k in kernels if k not in ev.kernels_removed]
            self.install_for_kernels(kernels, only=names, always=ev.build_added_always)
        if ev.kernels_added:
            self.install_for_kernels(ev.kernels_added)

    def _registrations(self, items: Iterable[str]) -> list[str]:
        """``name/version`` for each item; a directory stands for the registrations whose
        source link points at it, and one that none points at is not ours."""
        out: list[str] = []
        for item in items:
            if not item.startswith("/"):
                out.append(item)
                continue
            found = tree.registrations_at(self.ctx.layout, item)
            if not found:
                self.tx.notes.append(f"{item}: no registered module comes from there, nothing removed")
            out += [f"{m}/{v}" for m, v in found if f"{m}/{v}" not in out]
        return out

    # --- the end of a transaction -----------------------------------------------------------
    def finish(self) -> int:
        self.run_queued()
        ctx = self.ctx
        pending = set(ctx.depmod_batch or ())
        batch = sorted(pending | set(self.early_depmod), key=version_sort_key, reverse=True)
        ctx.depmod_batch = None
        for kver in batch:
            ctx.console.print(f"Running depmod for {kver}...", end="")
            # a kernel changed again after its early depmod gets a fresh one
            rc = depmod.do_depmod(ctx, kver) if kver in pending else self.early_depmod[kver]
            ctx.console.print(" done." if rc == 0 else f" failed (exit {rc}).")
            if rc != 0:
                self.tx.notes.append(f"kernel {kver}: depmod failed with exit {rc}")
        if not self.initramfs_follows:
            self._initramfs()
        self._summary()
        return 1 if self.tx.failed_critical else 0

    def _initramfs(self) -> None:
        ctx = self.ctx
        kernels = sorted(set(ctx.changed) | ctx.remake_initrd, key=version_sort_key, reverse=True)
        if not kernels:
            return
        tool = self._initramfs_tool()
        if not tool:
            return
        for kver in kernels:
            if not self._needs_initramfs(tool, kver):
                continue
            ctx.console.print(f"Regenerating the initramfs of {kver} with {tool}...", end="")
            ok = self.pm.hook.dkms_regenerate_initramfs(tool=tool, kver=kver, layout=ctx.layout)
            ctx.console.print(" done." if ok else " failed.")
            if not ok:
                self.tx.notes.append(f"kernel {kver}: {tool} failed; the old initramfs is still in place")

    def _initramfs_tool(self) -> str | None:
        tool = self.pm.hook.dkms_initramfs_tool(layout=self.ctx.layout, configured=self.ctx.hooks.initramfs)
        return None if not tool or tool == "none" else str(tool)

    def _needs_initramfs(self, tool: str, kver: str) -> bool:
        if kver in self.ctx.remake_initrd:
            return True
        names = tuple(sorted(self.ctx.changed.get(kver, ())))
        if (kver, names) not in self._inside:
            self._inside[(kver, names)] = bool(
                self.pm.hook.dkms_initramfs_contains(tool=tool, kver=kver, names=list(names), layout=self.ctx.layout))
        return self._inside[(kver, names)]

    def _summary(self) -> None:
        out = self.ctx.console.print
        records = self.tx.records
        out("")
        out("dkms-hooks summary:")
        if not records and not self.tx.notes:
            out("  nothing to do")
        from dkms_hooks import progress

        colour = progress.colour_enabled(self.ctx.console.out, self.ctx.env)
        for r in records:
            where = f", {r.kver}" if r.kver else ""
            word = progress.paint(r.outcome.value, _KIND.get(r.outcome, ""), colour)
            what = f"{r.module}/{r.version}" if r.version else r.module
            line = f"  {word}{' ' * (10 - len(r.outcome.value))} {what}{where}"
            if r.reason:
                line += f": {r.reason}"
            if r.log:
                line += f" (log: {r.log})"
            if r.outcome is Outcome.failed:
                line += " [critical]" if r.critical else " [optional: the transaction goes on]"
            out(line)
        for note in self.tx.notes:
            out(f"  note: {note}")
        for r in self.tx.failed_critical:
            self.ctx.console.error(f"critical module {r.module}/{r.version} failed for kernel {r.kver}.")


# --- queued work (a package manager transaction in progress) -------------------------------
def _queue_dir(ctx: Context) -> Path:
    return ctx.layout.hooks_state / "queue"


def enqueue(ctx: Context, event: Event) -> None:
    q = _queue_dir(ctx)
    q.mkdir(parents=True, exist_ok=True)
    data = event.to_json()
    name = f"{os.getpid()}-{len(list(q.iterdir()))}.json"
    tmp = q / f".{name}"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, q / name)
    ctx.console.print(f"dkms-hooks: {event.describe()} queued until the end of the package transaction")


def take_queue(ctx: Context) -> list[Event]:
    q = _queue_dir(ctx)
    if not q.is_dir():
        return []
    events = []
    for f in sorted(q.glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            events.append(Event.from_json(json.loads(f.read_text())))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        f.unlink(missing_ok=True)
    for d in (q, q.parent):
        try:
            d.rmdir()
        except OSError:
            pass
    return events


def handle(ctx: Context, event: Event, pm: pluggy.PluginManager, *, notes: Sequence[str] = ()) -> int:
    """Run an event (or, on a flush, what was queued) as one transaction; ``notes`` go in
    its summary."""
    for line in event.refused:
        ctx.console.error(line)
    bad = 2 if event.refused else 0
    if event.defer and not event.empty:
        enqueue(ctx, event)
        return bad
    if event.flush:
        queued = take_queue(ctx)
        if not queued:
            return bad
        event = merge(queued)
    if not (event.rescan or any(getattr(event, f) for f in CHANGES)):
        return bad
    engine = Engine(ctx, pm, initramfs_follows=event.initramfs_follows)
    engine.tx.notes.extend(notes)
    engine.apply(event)
    return engine.finish() or bad
