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

from dkms_hooks.model import tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.events import CHANGES, Event, Source, merge
from dkms_hooks.model.jobs import Job, Outcome, Record
from dkms_hooks.model.kernel import version_sort_key
from dkms_hooks.ops import add, buildrecord, depmod, maybe, signing
from dkms_hooks.ops.buildrecord import keep_failed_log
from dkms_hooks.system import progress
from dkms_hooks.system.console import BufferConsole
from dkms_hooks.system.errors import EXIT_INTERNAL, EXIT_SKIPPED, DkmsError, report
from dkms_hooks.transaction import kernelwide, planner, runner, verbs

TYPE_CHECKING = False  # see dkms_hooks/__init__.py
if TYPE_CHECKING:
    from dkms_hooks.model.context import Plugins

#: the colour of an outcome in the summary, on a terminal
_KIND = {Outcome.installed: "ok", Outcome.current: "ok", Outcome.skipped: "skipped", Outcome.failed: "failed"}
#: an install whose modules did not come from make says where they came from
_FROM = {"cache": "from this host's build cache", "registry": "from the fleet's registry, signature verified"}


@dataclass
class Transaction:
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: what needs the user before the reboot (Secure Boot will refuse the modules)
    warnings: list[str] = field(default_factory=list)

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


class Engine:
    def __init__(self, ctx: Context, plugins: Plugins, *, initramfs_follows: bool = False) -> None:
        self.ctx = ctx
        self.plugins = plugins
        #: the host regenerates the initramfs after us (kernel-install, a kernel's postinst)
        self.initramfs_follows = initramfs_follows
        #: (kernel, changed modules) -> whether any of them is inside the current image
        self._inside: dict[tuple[str, tuple[str, ...]], bool] = {}
        self.tx = Transaction()
        self.done: set[tuple[str, str, str]] = set()
        self.queue: list[Job] = []
        #: depmod already run while other jobs were building: kernel -> exit code
        self.early_depmod: dict[str, int] = {}
        self._deps: dict[tuple[str, str], list[str]] = {}
        ctx.tx.depmod_batch = set()
        ctx.tx.conf_memo = {}

    # --- jobs --------------------------------------------------------------------------
    def _critical(self, module: str) -> bool:
        return module in self.ctx.hooks.critical_modules

    def _run_job(self, ctx: Context, job: Job) -> int:
        module, version, kver, arch = job.module, job.version, job.kver, job.arch
        ctx.console.print(f"==> {module}/{version} for kernel {kver} ({arch})")
        if tree.is_installed(ctx.layout, module, version, kver, arch):
            self.tx.add(Record(module, version, kver, Outcome.current, critical=self._critical(module)))
            return 0
        built_here = not tree.is_built(ctx.layout, module, version, kver, arch)
        try:
            if built_here:
                signing.prepare_kernel_and_signing(ctx, kver, arch)
            with ctx.subshell():
                self._replace_or_install(ctx, module, version, kver, arch)
        except DkmsError as e:
            report(ctx.console, e)
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
            return EXIT_INTERNAL
        built = buildrecord.read(ctx, module, version, kver, arch) if built_here else None
        self.tx.add(Record(module, version, kver, Outcome.installed, critical=self._critical(module),
                           source=built.source if built else "", cache_note=built.cache_note if built else ""))
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
            maybe.maybe_install(ctx, module, version, kver, arch)
            return
        maybe.maybe_build(ctx, module, version, kver, arch)
        for w in others:
            maybe.maybe_uninstall(ctx, module, w, kver, arch)
        try:
            maybe.maybe_install(ctx, module, version, kver, arch)
        except DkmsError:
            for w in others:
                maybe.maybe_install(ctx, module, w, kver, arch)
            raise

    def _autoinstall_set(self, kver: str, arch: str, only: set[str] | None = None,
                         always: bool = False) -> list[tuple[str, str]]:
        ctx = self.ctx
        chosen: dict[str, str] = {}
        deps: dict[str, list[str]] = {}
        for m, v in kernelwide.latest_versions(ctx):
            if only is not None and m not in only:
                continue
            try:
                with ctx.subshell():
                    conf = kernelwide.registered_conf(ctx, m, v, kver, arch)
            except DkmsError as e:
                self.tx.add(Record(m, v, kver, Outcome.failed, f"invalid dkms.conf (exit {e.code})",
                                   critical=self._critical(m)))
                continue
            if not conf.autoinstall and not (always and only is not None):
                continue
            chosen[m] = v
            deps[m] = conf.build_depends
            self._deps[(m, kver)] = conf.build_depends
        # a BUILD_DEPENDS outside this set is the build's own check (exit 13)
        order, cycle = planner.build_order(deps, lambda d: d not in deps)
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
                    self.queue.append(Job(m, v, kver, arch))

    def run_queued(self) -> None:
        """Run the queued jobs: one graph for the whole transaction (planner.graph), run by
        the one runner, signing prepared beside the first builds."""
        jobs, self.queue = self._slow_depmod_first(self.queue), []
        if not jobs:
            return
        ctx = self.ctx
        plan = planner.graph(jobs, lambda job: self._deps.get((job.module, job.kver), []),
                             lambda job: maybe.own_build_dir(ctx, job.module, job.version, job.kver, job.arch))
        # A kernel's depmod runs as soon as its last job is done, in that job's token, while
        # other kernels still build (the slowest depmod's kernel was put first).
        left = {k: sum(1 for j in jobs if j.kver == k) for k in {j.kver for j in jobs}}
        lock = threading.Lock()
        parallel = runner.side_by_side(ctx, plan)

        def on_done(i: int, code: int) -> None:
            kver = jobs[i].kver
            batch = ctx.tx.depmod_batch
            with lock:
                left[kver] -= 1
                start = parallel and left[kver] == 0 and batch is not None and kver in batch
                if start and batch is not None:
                    batch.discard(kver)
            if start:
                self.early_depmod[kver] = depmod.do_depmod(ctx.fork(BufferConsole(True)), kver)
                # looking inside the kernel's initramfs (lsinitramfs: half a second) too
                if not self.initramfs_follows and (tool := self._initramfs_tool()):
                    self._needs_initramfs(tool, kver)

        outcomes = runner.run(ctx, plan, self._run_job, presign=runner.Presign.beside, on_done=on_done)
        for i, r in enumerate(outcomes):
            if r.code is None:
                job = r.job
                failed = sorted({jobs[k].module for k in plan.needs[i] if not outcomes[k].done})
                self.tx.add(Record(job.module, job.version, job.kver, Outcome.failed,
                                   f"not built: its BUILD_DEPENDS {' '.join(failed)} failed",
                                   critical=self._critical(job.module)))

    def _slow_depmod_first(self, jobs: list[Job]) -> list[Job]:
        """The kernels whose depmod takes longest (a big installed module tree: seconds,
        where a headers-only kernel takes none) build first, so that depmod runs while the
        other kernels still build instead of alone at the end; then the newest kernel, the
        one most likely to boot next. A kernel's jobs keep their (BUILD_DEPENDS) order."""
        def weight(kver: str) -> int:
            try:  # depmod skips a kernel without modules.dep; a few modules cost nothing
                return (self.ctx.layout.install_tree / kver / "modules.dep").stat().st_size // 65536
            except OSError:
                return 0

        kernels = sorted({j.kver for j in jobs}, key=lambda k: (weight(k), version_sort_key(k)), reverse=True)
        rank = {k: i for i, k in enumerate(kernels)}
        return sorted(jobs, key=lambda job: rank[job.kver])

    def unbuild_for_kernel(self, kver: str, *, autoinstall_only: bool) -> None:
        self.run_queued()  # events keep their order
        ctx = self.ctx
        arch = ctx.options.arches[0] if ctx.options.arches else os.uname().machine
        for r in kernelwide.unbuild_for_kernel(ctx, kver, arch, autoinstall_only=autoinstall_only,
                                               conf_errors_stop=False,
                                               say="==> removing {module}/{version} from kernel {kver} ({arch})"):
            if r.error is None:
                self.tx.add(Record(r.module, r.version, kver, Outcome.removed))
            else:
                self.tx.add(Record(r.module, r.version, kver, Outcome.failed, f"exit {r.error.code}",
                                   critical=self._critical(r.module)))

    def add_sources(self, sources: Iterable[Source]) -> set[str]:
        """Register module sources (a registration, or a directory holding dkms.conf)."""
        ctx = self.ctx
        names: set[str] = set()
        for source in sources:
            if not source.directory:
                m, v = source.module, source.version
            else:
                item = source.directory
                res = read_conf(ctx, "", "", "", "", os.path.join(item, "dkms.conf"), or_die=False)
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
            stale = [Source.named(m, old) for mm, old in tree.module_versions(ctx.layout, m)
                     if old != v and tree.is_broken(ctx.layout, m, old)]
            if stale:
                self.remove_sources(stale)
            if tree.is_added(ctx.layout, m, v):
                continue
            try:
                with ctx.subshell():
                    add.add_module(ctx, m, v)
                self.tx.add(Record(m, v, "", Outcome.added))
            except DkmsError as e:
                report(ctx.console, e)
                self.tx.add(Record(m, v, "", Outcome.failed, f"add failed (exit {e.code})", critical=self._critical(m)))
        return names

    def remove_sources(self, sources: Iterable[Source]) -> None:
        """Remove registrations (``sources`` name them: see _registrations); one without a
        version stands for every version of the module."""
        self.run_queued()  # events keep their order
        ctx = self.ctx
        for source in sources:
            m, v = source.module, source.version
            versions = [v] if v else [vv for mm, vv in tree.module_versions(ctx.layout, m)]
            for ver in versions:
                if not tree.is_added(ctx.layout, m, ver) and not tree.is_broken(ctx.layout, m, ver):
                    continue
                conf = ""
                if tree.is_broken(ctx.layout, m, ver):
                    # its source went away first: uninstall with the dkms.conf kept at add time
                    copy = ctx.layout.saved_conf(m, ver)
                    if not copy.is_file():
                        self.tx.add(Record(m, ver, "", Outcome.failed,
                                           "source gone and no saved dkms.conf: remove it by hand"))
                        continue
                    conf = str(copy)
                built = tree.built_entries(ctx.layout, m, ver)
                verb = ctx.with_options(module=m, version=ver, conf=conf or ctx.options.conf,
                                        kernels=[e.kver for e in built], arches=[e.arch for e in built])
                try:
                    verbs.remove_module(verb)
                    self.tx.add(Record(m, ver, "", Outcome.removed))
                except DkmsError as e:
                    report(ctx.console, e)
                    self.tx.add(Record(m, ver, "", Outcome.failed, f"remove failed (exit {e.code})"))

    # --- one event, whole -------------------------------------------------------------------
    def apply(self, ev: Event) -> None:
        """Everything the event carries, removals before additions: kernels being
        reinstalled or removed, module sources that went, then sources that came (built for
        every kernel with headers that stays) and new kernels."""
        removed = list(ev.sources_removed)
        added = list(ev.sources_added)
        if ev.rescan:
            new, gone, changed = tree.sources_out_of_step(self.ctx.layout)
            removed += [Source.named(m, v) for m, v in gone + changed]
            added += [Source.named(m, v) for m, v in changed] + [Source.at(d) for d in new]
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

    def _registrations(self, sources: Iterable[Source]) -> list[Source]:
        """The registrations ``sources`` name: a directory stands for those whose source
        link points at it, and one that none points at is not ours."""
        out: list[Source] = []
        for source in sources:
            if not source.directory:
                out.append(source)
                continue
            found = tree.registrations_at(self.ctx.layout, source.directory)
            if not found:
                self.tx.notes.append(f"{source.directory}: no registered module comes from there, nothing removed")
            out += [s for s in (Source.named(m, v) for m, v in found) if s not in out]
        return out

    # --- the end of a transaction -----------------------------------------------------------
    def finish(self) -> int:
        self.run_queued()
        ctx = self.ctx
        pending = set(ctx.tx.depmod_batch or ())
        batch = sorted(pending | set(self.early_depmod), key=version_sort_key, reverse=True)
        ctx.tx.depmod_batch = None
        for kver in batch:
            ctx.console.print(f"Running depmod for {kver}...", end="")
            # a kernel changed again after its early depmod gets a fresh one
            rc = depmod.do_depmod(ctx, kver) if kver in pending else self.early_depmod[kver]
            ctx.console.print(" done." if rc == 0 else f" failed (exit {rc}).")
            if rc != 0:
                self.tx.notes.append(f"kernel {kver}: depmod failed with exit {rc}")
        if not self.initramfs_follows:
            self._initramfs()
        if ctx.tx.signed_with:
            from dkms_hooks.ops import secureboot  # lazy: only once something was built

            self.tx.warnings.extend(secureboot.warnings_for(ctx, ctx.tx.signed_with))
        self._summary()
        return 1 if self.tx.failed_critical else 0

    def _initramfs(self) -> None:
        ctx = self.ctx
        kernels = sorted(set(ctx.tx.changed) | ctx.tx.remake_initrd, key=version_sort_key, reverse=True)
        if not kernels:
            return
        tool = self._initramfs_tool()
        if not tool:
            return
        for kver in kernels:
            if not self._needs_initramfs(tool, kver):
                continue
            ctx.console.print(f"Regenerating the initramfs of {kver} with {tool}...", end="")
            ok = self.plugins.regenerate_initramfs(tool, kver)
            ctx.console.print(" done." if ok else " failed.")
            if not ok:
                self.tx.notes.append(f"kernel {kver}: {tool} failed; the old initramfs is still in place")

    def _initramfs_tool(self) -> str | None:
        return self.plugins.initramfs_tool(self.ctx.hooks.initramfs)

    def _needs_initramfs(self, tool: str, kver: str) -> bool:
        if kver in self.ctx.tx.remake_initrd:
            return True
        names = tuple(sorted(self.ctx.tx.changed.get(kver, ())))
        if (kver, names) not in self._inside:
            self._inside[(kver, names)] = self.plugins.initramfs_contains(tool, kver, names)
        return self._inside[(kver, names)]

    def _summary(self) -> None:
        out = self.ctx.console.print
        records = self.tx.records
        out("")
        out("dkms-hooks summary:")
        if not records and not self.tx.notes and not self.tx.warnings:
            out("  nothing to do")
        colour = progress.colour_enabled(self.ctx.console.out, self.ctx.env)
        for r in records:
            where = f", {r.kver}" if r.kver else ""
            word = progress.paint(r.outcome.value, _KIND.get(r.outcome, ""), colour)
            what = f"{r.module}/{r.version}" if r.version else r.module
            line = f"  {word}{' ' * (10 - len(r.outcome.value))} {what}{where}"
            if r.reason:
                line += f": {r.reason}"
            if r.source in _FROM:
                line += f" ({_FROM[r.source]})"
            if r.cache_note:
                line += f" (built here: {r.cache_note})"
            if r.log:
                line += f" (log: {r.log})"
            if r.outcome is Outcome.failed:
                line += " [critical]" if r.critical else " [optional: the transaction goes on]"
            out(line)
        for note in self.tx.notes:
            out(f"  note: {note}")
        for warning in self.tx.warnings:
            out(f"  warning: {warning}")
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


def handle(ctx: Context, event: Event, *, notes: Sequence[str] = ()) -> int:
    """Run an event (or, on a flush, what was queued) as one transaction; ``notes`` go in
    its summary. ``ctx.plugins`` answers for the plugin manager."""
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
    if ctx.plugins is None:
        raise RuntimeError("events run with the plugins (ctx.plugins)")
    engine = Engine(ctx, ctx.plugins, initramfs_follows=event.initramfs_follows)
    engine.tx.notes.extend(notes)
    engine.apply(event)
    return engine.finish() or bad
