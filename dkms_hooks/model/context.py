"""The run's context (set up once at the entry point, never changed), upstream's per-subshell
globals (Shell), and the transaction in flight (TxState)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dkms_hooks.model import dkmsconf
from dkms_hooks.model.kernel import KernelTarget
from dkms_hooks.model.options import Options
from dkms_hooks.model.paths import Layout
from dkms_hooks.model.settings import HooksSettings
from dkms_hooks.system.console import Console

TYPE_CHECKING = False  # see __init__.py
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Protocol, TextIO

    from dkms_hooks.model.events import Event
    from dkms_hooks.system.run import RunAs

    class Jobserver(Protocol):
        """GNU make's jobserver of a run (transaction/scheduler.py)."""

        @property
        def makeflags(self) -> str: ...
        @property
        def fds(self) -> tuple[int, int]: ...

    class ProbeAnswers(Protocol):
        """Kbuild's compiler probes answered once (ops/ccprobe.py)."""

        def env(self, env: Mapping[str, str], own_dir: Path, user: RunAs | None) -> dict[str, str]: ...

    class Plugins(Protocol):
        """What the layers below the face ask of the plugins (plugins/calls.py)."""

        def parse_event(self, source: str, argv: Sequence[str], env: dict[str, str], stdin: TextIO
                        ) -> Event | None: ...
        def dest_location(self, declared: str) -> str: ...
        def signing_key(self, kver: str) -> tuple[str, str] | None: ...
        def headers_hint(self, kver: str) -> str: ...
        def module_installed(self, module: str, version: str, kver: str, arch: str) -> None: ...
        def module_removed(self, module: str, version: str, kver: str, arch: str) -> None: ...
        def initramfs_tool(self, configured: str) -> str | None: ...
        def initramfs_contains(self, tool: str, kver: str, names: Sequence[str]) -> bool: ...
        def regenerate_initramfs(self, tool: str, kver: str) -> bool: ...


@dataclass
class Signing:
    enabled: bool
    sign_file: str = ""
    hash: str = ""
    key: str = ""
    cert: str = ""


@dataclass
class Shell:
    """What upstream keeps in globals that a ``( ... )`` subshell changes for itself only:
    the last dkms.conf read, the kernel whose signing was prepared, --force as install
    turns it on. Each job gets a copy; ``Context.subshell`` puts it back after a block."""

    last_conf_key: tuple[str, ...] | None = None
    last_conf: dkmsconf.ModuleConf | None = None
    prepared_kernel: str = "none"
    signing: Signing | None = None
    force: bool = False
    force_version_override: bool = False
    #: --directive names, exported to the environment of builds as upstream does (kept
    #: after a subshell, as upstream's export is)
    exported: dict[str, str] = field(default_factory=dict)


@dataclass
class TxState:
    """The transaction in flight, shared by the contexts of all its jobs. The transaction
    layer sets it up and reads it; a step only records in it what it changed."""

    #: kernels whose depmod waits for the end of the transaction (None: run it at once)
    depmod_batch: set[str] | None = None
    #: module file names installed or removed, per kernel
    changed: dict[str, set[str]] = field(default_factory=dict)
    #: kernels for which a changed module asked for a new initramfs (REMAKE_INITRD=yes)
    remake_initrd: set[str] = field(default_factory=set)
    #: signing prepared once per kernel ("kver/arch") for the whole run, shared by its jobs
    presigned: dict[str, Signing] = field(default_factory=dict)
    #: builds that allow it run in a directory of their own per kernel, so one module
    #: builds for several kernels at once
    private_builds: bool = False
    #: every dkms.conf read so far, shared by the jobs, so that checks that look at every
    #: module (BUILD_DEPENDS_REBUILD) do not re-run bash per job. Keyed on the files'
    #: identity and the kernel, so an edited file is read again.
    conf_memo: dict[tuple[object, ...], dkmsconf.ModuleConf] | None = None
    #: kbuild's compiler probes answered once, shared by the builds for a kernel
    cc_probes: ProbeAnswers | None = None
    #: the certificates that signed modules in this run ("" for modules left unsigned), and
    #: for which kernels ("kver/arch"): the warning before the reboot when Secure Boot will
    #: refuse them
    signed_with: dict[str, set[str]] = field(default_factory=dict)

    def note_change(self, kver: str, names: list[str], *, remake_initrd: bool = False) -> None:
        """A step installed or removed these module files for ``kver``."""
        self.changed.setdefault(kver, set()).update(names)
        if remake_initrd:
            self.remake_initrd.add(kver)


@dataclass(frozen=True)
class Context:
    """One dkms run: what it was asked (options), where (layout), with which settings,
    console and plugins. Set up once at the entry point and never changed; a job running
    beside others gets a fork (its own console and Shell, the same TxState)."""

    layout: Layout
    console: Console
    distro: str
    env: dict[str, str]
    framework: dict[str, str]
    options: Options
    hooks: HooksSettings = field(default_factory=HooksSettings)
    addon_modules_dir: str = ""
    parallel_jobs: str = ""
    #: the plugins, through typed calls: the plugin manager's for events, else the built-in policy
    plugins: Plugins | None = None
    shell: Shell = field(default_factory=Shell)
    tx: TxState = field(default_factory=TxState)
    #: a job's: the run's jobserver, which its makes join instead of -jN
    jobserver: Jobserver | None = None
    #: a job's: set once the run's signing (tx.presigned) is prepared; until then a build
    #: goes ahead and waits for it only when it comes to sign
    signing_ready: threading.Event | None = None

    def fork(self, console: Console, jobserver: Jobserver | None = None,
             signing_ready: threading.Event | None = None) -> Context:
        """A context for one job running beside others: its own console and a copy of the
        Shell; the trees, settings and transaction shared. Given a jobserver, its makes
        take their jobs from it."""
        shell = dataclasses.replace(self.shell, exported=dict(self.shell.exported))
        return dataclasses.replace(self, console=console, shell=shell,
                                   jobserver=jobserver if jobserver is not None else self.jobserver,
                                   signing_ready=signing_ready if signing_ready is not None else self.signing_ready)

    def with_options(self, **changes: Any) -> Context:
        """A context for one verb run on behalf of a transaction (the engine removing a
        module): other options, the same Shell and transaction."""
        return dataclasses.replace(self, options=dataclasses.replace(self.options, **changes))

    def in_transaction(self, tx: TxState) -> Context:
        """The same run with another transaction state (a scratch tree's)."""
        return dataclasses.replace(self, tx=tx, shell=Shell(force=self.options.force,
                                                             force_version_override=self.options.force_version_override))

    def budget(self) -> int:
        try:
            return max(int(self.parallel_jobs), 1)
        except ValueError:
            return len(os.sched_getaffinity(0))

    def dest_location(self, declared: str) -> str:
        if self.addon_modules_dir:
            return "/" + self.addon_modules_dir
        return self.plugins.dest_location(declared) if self.plugins is not None else declared

    def signing_key(self, kver: str) -> tuple[str, str] | None:
        return self.plugins.signing_key(kver) if self.plugins is not None else None

    def headers_hint(self, kver: str) -> str:
        """The package that brings ``kver``'s headers, or ""."""
        return self.plugins.headers_hint(kver) if self.plugins is not None else ""

    @contextlib.contextmanager
    def subshell(self) -> Iterator[None]:
        """Run a block the way upstream runs a ``( ... )`` subshell: what it changes in the
        shared state is forgotten afterwards."""
        sh = self.shell
        saved = (sh.last_conf_key, sh.last_conf, sh.prepared_kernel, sh.signing, sh.force, sh.force_version_override)
        try:
            yield
        finally:
            (sh.last_conf_key, sh.last_conf, sh.prepared_kernel, sh.signing, sh.force,
             sh.force_version_override) = saved

    def kernel(self, kver: str, arch: str) -> KernelTarget:
        o = self.options
        return KernelTarget.resolve(
            self.layout,
            kver,
            arch,
            source_dir=Path(o.kernel_source_dir) if o.kernel_source_dir else None,
            config=Path(o.kernel_config) if o.kernel_config else None,
        )

    def conf_scope(self, module: str, version: str, kernel: KernelTarget) -> dict[str, str]:
        lay = self.layout
        return {
            "kernelver": kernel.kver,
            "arch": kernel.arch,
            "kernel_source_dir": os.fspath(kernel.source_dir),
            "kernel_config": os.fspath(kernel.config),
            "dkms_tree": os.fspath(lay.dkms_tree),
            "source_tree": os.fspath(lay.source_tree),
            "install_tree": os.fspath(lay.install_tree),
            "tmp_location": os.fspath(lay.tmp),
            "module": module,
            "module_version": version,
            "parallel_jobs": self.parallel_jobs,
            "running_distribution": self.distro,
            "addon_modules_dir": self.addon_modules_dir,
            "current_kernel": os.uname().release,
            "verbose": "true" if self.options.verbose else "",
        }

    def build_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k not in ("CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS")}
        env.update(self.shell.exported)
        return env
