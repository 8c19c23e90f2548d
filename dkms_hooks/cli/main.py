"""The ``dkms`` command: parse, set up, dispatch, and turn errors into messages and exit
codes in one place."""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from dkms_hooks import UPSTREAM_RELEASE
from dkms_hooks.cli import cmdline
from dkms_hooks.model import distro, safety, settings
from dkms_hooks.model.context import Context, Shell
from dkms_hooks.model.kernel import version_sort_key
from dkms_hooks.model.paths import Layout
from dkms_hooks.ops import journal
from dkms_hooks.plugins.calls import PluginCalls
from dkms_hooks.system import locking, run
from dkms_hooks.system.console import Console
from dkms_hooks.system.errors import EXIT_INTERNAL, DkmsError, report

TYPE_CHECKING = False  # see __init__.py
if TYPE_CHECKING:
    from typing import NoReturn

#: verbs that change the trees, and so take the tree lock
_MUTATING = {"add", "build", "install", "uninstall", "unbuild", "remove", "autoinstall", "match", "ldtarball",
             "kernel_preinst", "kernel_postinst", "kernel_prerm"}


#: verbs with a JSON form (--json); docs/json.md
_JSON = {"status", "plan", "conf"}


def _layout_from_env(env: dict[str, str]) -> Layout:
    """DKMS_HOOKS_SYSROOT (or dpkg's DPKG_ROOT, when dpkg runs maintainer scripts outside a
    chroot) names another root: its /etc/dkms, os-release and /boot are read, and the trees
    default to the ones inside it. For image builds, and tests that must not touch the host."""
    sysroot = Path(env.get("DKMS_HOOKS_SYSROOT") or env.get("DPKG_ROOT") or "/")
    tmp = Path(env.get("TMPDIR") or "/tmp")
    if sysroot == Path("/"):
        return Layout(sysroot=sysroot, tmp=tmp)
    return Layout(dkms_tree=sysroot / "var/lib/dkms", source_tree=sysroot / "usr/src",
                  install_tree=sysroot / "lib/modules", sysroot=sysroot, tmp=tmp)


def _have_one_kernel(ctx: Context, action: str) -> None:
    o = ctx.options
    if o.all:
        raise DkmsError(5, f"The action {action} does not support the --all parameter.")
    if len(o.kernels) != 1:
        if action in ("kernel_preinst", "kernel_postinst", "kernel_prerm"):
            raise DkmsError(4, f"The action {action} requires exactly one kernel version parameter on the "
                               "command line.")
        raise DkmsError(4, f"The action {action} does not support multiple kernel version parameters on the "
                           "command line.")


def _default_arch(ctx: Context, kernels: list[str]) -> str:
    if distro.is_rpm_family(ctx.distro) and kernels and run.which("rpm", ctx.env):
        owner = run.run(["rpm", "-qf", ctx.layout.install_tree / kernels[0]], stderr=run.DEVNULL)
        pkgs = [line for line in owner.stdout.splitlines() if "not owned" not in line and "kernel" in line]
        if pkgs:
            res = run.run(["rpm", "-q", "--queryformat", "%{ARCH}", pkgs[0]], stderr=run.DEVNULL)
            if res.returncode == 0 and res.stdout:
                return res.stdout
    return distro.machine_arch()


def _setup_kernels(ctx: Context, action: str) -> Context:
    """The run's kernels and arches, as upstream's setup_kernels_arches completes them."""
    o = ctx.options
    kernels, arches = list(o.kernels), list(o.arches)
    if o.all and action != "status":
        lines = [f"{e.state} {e.module}/{e.version}/{e.kver}/{e.arch}"
                 for m, v in [(o.module, o.version)] for e in _built(ctx, m, v)]
        for line in sorted(lines, key=version_sort_key):
            ka = line.split("/", 2)[2]
            k, _, a = ka.rpartition("/")
            kernels.append(k)
            arches.append(a)
    if action != "status":
        if not kernels and not o.all:
            kernels.append(os.uname().release)
        if not arches:
            arches.append(_default_arch(ctx, kernels))
    if len(arches) == 1 and len(kernels) > 1:
        arches += [arches[0]] * (len(kernels) - 1)
    if action != "status":
        for i, k in enumerate(kernels):
            if not k:
                raise DkmsError(16, f"Empty kernelver[{i}]")
        for i, a in enumerate(arches):
            if not a:
                raise DkmsError(16, f"Empty arch[{i}]")
    return ctx.with_options(kernels=tuple(kernels), arches=tuple(arches))


def _check_names(ctx: Context) -> None:
    """Ours: a module, version, kernel or arch name becomes a path component, so it must be one."""
    o = ctx.options
    named = [("kernel version", k) for k in o.kernels if k] + [("arch", a) for a in o.arches if a]
    if o.module and o.version:
        named = [("module name", o.module), ("module version", o.version), *named]
    for what, value in named:
        why = safety.bad_name(value)
        if why:
            raise DkmsError(1, f"Invalid {what}: {why}.")


def _built(ctx: Context, module: str, version: str) -> list:  # type: ignore[type-arg]
    from dkms_hooks.model import tree

    if not module or not version:
        return []
    return tree.built_entries(ctx.layout, module, version)


def _check_root_for_install(ctx: Context) -> None:
    # Upstream demands root for any install; writing into a relocated install tree is
    # a sandbox or image build and needs no more than write access to it.
    if not ctx.layout.is_relocated_install_tree() and os.geteuid() != 0:
        raise DkmsError(1, "You must be root to use this command.")


# The handlers import what their verb needs when it runs: `dkms status` and `dkms --version`
# start without the build machinery (start-up speed, bench/'s fixed cost), not to dodge a cycle.
def _status(ctx: Context) -> int:
    if ctx.options.json:
        from dkms_hooks.cli import statusjson

        statusjson.show_status_json(ctx)
    else:
        from dkms_hooks.cli import status

        status.show_status(ctx)
    return 0


def _plan(ctx: Context) -> int:
    from dkms_hooks.cli import planview

    return planview.run_plan(ctx)


def _conf(ctx: Context) -> int:
    from dkms_hooks.cli import confcmd

    return confcmd.run_conf(ctx)


def _take_off(ctx: Context) -> int:
    """remove, unbuild, uninstall."""
    from dkms_hooks.transaction import verbs

    action = ctx.options.action
    verbs.check_module_args(ctx, action)
    verbs.module_is_broken_and_die(ctx)
    verbs.module_is_added_or_die(ctx)
    if action == "uninstall":
        _check_root_for_install(ctx)
        verbs.uninstall_module(ctx)
    else:
        verbs.check_rw_dkms_tree(ctx)
        (verbs.remove_module if action == "remove" else verbs.unbuild_module)(ctx)
    _maybe_post_transaction(ctx)
    return 0


def _put_on(ctx: Context) -> int:
    """add, build, install."""
    from dkms_hooks.transaction import verbs

    o = ctx.options
    action = o.action
    if o.all:
        raise DkmsError(5, f"The action {action} does not support the --all parameter.")
    if action != "add":
        verbs.module_is_broken_and_die(ctx)
    if action == "install":
        _check_root_for_install(ctx)
    else:
        verbs.check_rw_dkms_tree(ctx)
    if action == "add":
        verbs.add_verb(ctx)
        return 0
    if not o.module and not o.version and (o.try_source_tree or o.archive):
        ctx = verbs.add_verb(ctx)
        ctx.console.print("")
    verbs.check_module_args(ctx, action)
    if action == "build":
        verbs.build_module(ctx)
    else:
        verbs.install_module(ctx)
        _maybe_post_transaction(ctx)
    return 0


def _autoinstall(ctx: Context) -> int:
    """autoinstall, kernel_postinst."""
    from dkms_hooks.transaction import autoinstall

    action = ctx.options.action
    _have_one_kernel(ctx, action)
    _check_root_for_install(ctx)
    installed = autoinstall.autoinstall(ctx)
    if installed and action == "autoinstall":
        _maybe_post_transaction(ctx)
    return 0


def _kernel_removal(ctx: Context) -> int:
    """kernel_preinst, kernel_prerm."""
    from dkms_hooks.transaction import autoinstall

    action = ctx.options.action
    _check_root_for_install(ctx)
    _have_one_kernel(ctx, action)
    (autoinstall.kernel_preinst if action == "kernel_preinst" else autoinstall.kernel_prerm)(ctx)
    return 0


def _generate_mok(ctx: Context) -> int:
    from dkms_hooks.ops import signing

    values = signing.read_signing_settings(ctx, None)
    signing.prepare_mok(ctx, values, None)
    return 0


def _match(ctx: Context) -> int:
    from dkms_hooks.ops import add
    from dkms_hooks.transaction import verbs

    add.check_root(ctx)
    _have_one_kernel(ctx, "match")
    verbs.run_match(ctx)
    return 0


def _mktarball(ctx: Context) -> int:
    from dkms_hooks.ops import tarball
    from dkms_hooks.transaction import verbs

    verbs.check_module_args(ctx, "mktarball")
    verbs.module_is_broken_and_die(ctx)
    verbs.module_is_added_or_die(ctx)
    tarball.make_tarball(ctx)
    return 0


def _ldtarball(ctx: Context) -> int:
    from dkms_hooks.transaction import verbs

    if os.geteuid() != 0 and ctx.options.force:
        raise DkmsError(1, "You must be root to use this command with the --force option.")
    return verbs.ldtarball(ctx)


HANDLERS: dict[str, Callable[[Context], int]] = {
    "status": _status, "plan": _plan, "conf": _conf,
    "remove": _take_off, "unbuild": _take_off, "uninstall": _take_off,
    "add": _put_on, "build": _put_on, "install": _put_on,
    "autoinstall": _autoinstall, "kernel_postinst": _autoinstall,
    "kernel_preinst": _kernel_removal, "kernel_prerm": _kernel_removal,
    "generate_mok": _generate_mok, "match": _match, "mktarball": _mktarball, "ldtarball": _ldtarball,
}


def dispatch(ctx: Context) -> int:
    handler = HANDLERS.get(ctx.options.action)
    if handler is not None:
        return handler(ctx)
    ctx.console.error(f'Unknown action specified: "{ctx.options.action}"')
    ctx.console.print(cmdline.USAGE.format(prog=sys.argv[0] if sys.argv else "dkms"))
    return 0


def _recover(ctx: Context) -> None:
    """Before anything else, finish or undo what a killed dkms left half done."""
    if journal.records(ctx):
        from dkms_hooks.transaction import recovery

        recovery.recover(ctx)


def _maybe_post_transaction(ctx: Context) -> None:
    if ctx.framework.get("post_transaction"):
        from dkms_hooks.transaction import verbs

        verbs.post_transaction(ctx)


def _ensure_system_skeleton(layout: Layout, parsed: cmdline.Parsed) -> None:
    """Acting as the system's dkms (root, real root, no relocated trees), make sure the
    drop-in directory for framework settings exists, as upstream's package ships it.
    Files other packages call (Debian's helpers) are the package's to lay, never ours."""
    if not _is_system_dkms(layout, parsed):
        return
    d = layout.etc_dkms / "framework.conf.d"
    if not d.is_dir():
        try:
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError:
            pass


def _is_system_dkms(layout: Layout, parsed: cmdline.Parsed) -> bool:
    return os.geteuid() == 0 and layout.sysroot == Path("/") and not parsed.trees


def _build_context(parsed: cmdline.Parsed, console: Console, env: dict[str, str]) -> Context:
    layout = _layout_from_env(env)
    _ensure_system_skeleton(layout, parsed)
    running = distro.running_distribution(layout)
    addon = env.get("ADDON_MODULES_DIR", "")
    if not addon and layout.module_init_tools.exists():
        res = run.run(["bash", "-c", '. "$1" >/dev/null 2>&1; printf %s "${ADDON_MODULES_DIR-}"', "bash",
                       layout.module_init_tools], env=env)
        addon = res.stdout
    defaults = {
        "dkms_tree": os.fspath(layout.dkms_tree),
        "source_tree": os.fspath(layout.source_tree),
        "install_tree": os.fspath(layout.install_tree),
        "tmp_location": os.fspath(layout.tmp),
    }
    framework = settings.read_framework(layout, settings.NONSIGNING, scope=defaults, env=env)
    trees = {k: framework.get(k) or defaults[k] for k in ("dkms_tree", "source_tree", "install_tree")}
    trees.update({k: v for k, v in parsed.trees.items()})
    layout = layout.with_trees(
        dkms_tree=Path(trees["dkms_tree"]),
        source_tree=Path(trees["source_tree"]),
        install_tree=Path(trees["install_tree"]),
        tmp=Path(framework.get("tmp_location") or layout.tmp),
    )
    o = dataclasses.replace(parsed.options, verbose=parsed.options.verbose or bool(framework.get("verbose")),
                            symlink_modules=parsed.options.symlink_modules or bool(framework.get("symlink_modules")))
    hooks = settings.load_hooks_settings(layout.settings_toml)
    jobs = o.parallel_jobs if o.parallel_jobs is not None else framework.get("parallel_jobs", "")
    if not jobs:
        # upstream asks nproc(1); `dkms conf` does too, so a pinned nproc shows in the values it
        # prints; everything else takes the same number from the CPU affinity, without a process
        cpus = settings.nproc(env) if o.action == "conf" else str(len(os.sched_getaffinity(0)))
        jobs = str(hooks.jobs) if hooks.jobs else cpus
    return Context(layout=layout, console=console, distro=running, env=env, framework=framework, options=o,
                   plugins=PluginCalls(None, running, layout), hooks=hooks, addon_modules_dir=addon,
                   parallel_jobs="" if jobs == "0" else jobs,
                   shell=Shell(force=o.force, force_version_override=o.force_version_override))


def _split_event(args: list[str]) -> tuple[list[str], list[str]] | None:
    """``[--option=value...] event SOURCE ARGS...``: the options, and what follows ``event``."""
    for i, a in enumerate(args):
        if a == "event":
            return args[:i], args[i + 1:]
        if not a.startswith("-"):
            return None
    return None


def run_event(ctx: Context, event_args: list[str], *, system: bool = False) -> int:
    # lazy: pluggy and the engine only for events (start-up speed of the plain verbs)
    from dkms_hooks.plugins import manager
    from dkms_hooks.transaction import engine

    if not event_args:
        raise DkmsError(2, "Usage: dkms event SOURCE [ARGS...]")
    source, argv = event_args[0], event_args[1:]
    plugins = PluginCalls(manager.get_plugin_manager(), ctx.distro, ctx.layout)
    event = plugins.parse_event(source, argv, ctx.env, sys.stdin)
    if event is None:
        raise DkmsError(2, f"No adapter handles events from {source!r}.")
    ctx = dataclasses.replace(ctx, plugins=plugins, options=dataclasses.replace(
        ctx.options, arches=ctx.options.arches or (distro.machine_arch(),)))

    notes = []
    if system and event.source == "apt":
        # dkms never writes them itself: that would tie Debian's hooks to whatever
        # interpreter happened to run it; it says they are missing
        missing = [p for p in ctx.layout.debian_helpers if not p.exists()]
        if missing:
            notes.append(f"{' and '.join(map(str, missing))} missing: Debian's kernel hooks and dh_dkms module "
                         "packages cannot reach dkms; reinstall the dkms-hooks package "
                         "(or make install DISTRO=debian)")

    def work() -> int:
        with locking.tree_lock(ctx.layout.dkms_tree, ctx.console):
            _recover(ctx)
            return engine.handle(ctx, event, notes=notes)

    limit = ctx.hooks.boot_time_limit if event.at_boot else 0
    return _within(ctx, limit, work) if limit else work()


def _within(ctx: Context, seconds: int, work: Callable[[], int]) -> int:
    """Run ``work`` in a child and wait for it at most ``seconds``: the boot goes on after
    that, and the builds go on in the background (the unit's KillMode=process spares them)."""
    import time

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's result is seen through its exit code
        code = EXIT_INTERNAL
        try:
            code = work()
        except DkmsError as e:
            report(ctx.console, e)
            code = e.code
        except BaseException as e:  # noqa: BLE001 - no traceback at boot either
            ctx.console.error(f"internal error: {e!r}")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    ctx.console.print(f"dkms-hooks: still building after {seconds} s; the builds go on in the background "
                      f"(pid {pid}) and the boot does not wait for them (boot_time_limit in "
                      f"{ctx.layout.settings_toml})")
    return 0


def _report_rss() -> None:
    # DKMS_HOOKS_REPORT_RSS=1: our own peak memory, not our compilers' (for bench/)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                kb = int(line.split()[1])
                print(f"dkms-hooks peak RSS: {kb / 1024:.0f} MB", file=sys.stderr)
    except OSError:
        pass


def entry() -> NoReturn:
    """The installed command: main(), then a quick exit. Tearing the interpreter down module
    by module costs ~8 ms a command for nothing, as the process ends anyway; exit handlers
    run and output is flushed first, and the normal exit is kept while a thread is alive."""
    code = main()
    if threading.active_count() == 1:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a failing flush is reported by the normal exit
            raise SystemExit(code) from None
        os._exit(code)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None, *, console: Console | None = None,
         env: dict[str, str] | None = None) -> int:
    if os.environ.get("DKMS_HOOKS_REPORT_RSS") and argv is None:
        atexit.register(_report_rss)
    args = list(sys.argv[1:] if argv is None else argv)
    if console is None and argv is None:
        # `dkms status | head` ends quietly, as shell tools do
        import signal

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    console = console if console is not None else Console()
    env = dict(os.environ) if env is None else env
    split = _split_event(args)
    event_args: list[str] | None = None
    if split is not None:
        args, event_args = split
    parsed = cmdline.parse(args)
    debug = parsed.debug
    run.DEBUG = debug
    try:
        for kind, text in parsed.events:
            if kind == "quiet":
                console.quiet = True
            elif kind == "deprecated":
                console.deprecated(text)
            elif kind == "warn":
                console.warn(text)
        if parsed.unknown_option:
            console.error(f"Unknown option: {parsed.unknown_option}")
            console.print(cmdline.USAGE.format(prog=sys.argv[0] if sys.argv else "dkms"))
            return 2
        if parsed.more_than_one_action:
            raise DkmsError(4, "Cannot specify more than one action.")
        if parsed.show_help:
            console.print(cmdline.USAGE.format(prog=sys.argv[0] if sys.argv else "dkms"))
            return 0
        ctx = _build_context(parsed, console, env)
        if event_args is not None:
            return run_event(ctx, event_args, system=_is_system_dkms(ctx.layout, parsed))
        if parsed.show_version:
            console.print(UPSTREAM_RELEASE)
            return 0
        o = ctx.options
        if o.binaries_only and o.source_only:
            raise DkmsError(8, "You have specified both --binaries-only and --source-only.", "You cannot do this.")
        if len(o.kernels) != len(o.arches) and len(o.arches) > 1:
            raise DkmsError(1, "If more than one arch is specified on the command line, then there",
                            "must be an equal number of kernel versions also specified (1:1 relationship).")
        if o.kernels and o.all:
            raise DkmsError(2, "You cannot specify a kernel version and also specify", "--all on the command line.")
        if o.arches and o.all:
            raise DkmsError(3, "You cannot specify an arch and also specify", "--all on the command line.")
        if o.action in ("kernel_preinst", "kernel_postinst", "kernel_prerm"):
            _have_one_kernel(ctx, o.action)
        if o.json and o.action and o.action not in _JSON:
            raise DkmsError(2, f"The action {o.action} does not support --json.")
        if o.plan_build and o.action != "plan":
            raise DkmsError(2, "Only the action plan takes --build.")
        ctx = _setup_kernels(ctx, o.action)
        _check_names(ctx)
        if o.action in _MUTATING:
            with locking.tree_lock(ctx.layout.dkms_tree, ctx.console):
                _recover(ctx)
                return dispatch(ctx)
        if o.action == "status" and journal.records(ctx):
            from dkms_hooks.transaction import recovery

            recovery.recover_if_idle(ctx)
        return dispatch(ctx)
    except DkmsError as e:
        report(console, e)
        return e.code
    except run.ToolMissing as e:
        console.error(str(e))
        return 1
    except settings.SettingsError as e:
        console.error(str(e))
        return 1
    except KeyboardInterrupt:
        console.eprint("Interrupted.")
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: no traceback for users
        if debug:
            import traceback

            traceback.print_exc()
        console.error(f"internal error: {e.__class__.__name__}: {e}",
                      "Run again with --debug for details, and please report it.")
        return EXIT_INTERNAL
