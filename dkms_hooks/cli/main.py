"""The ``dkms`` command: parse, set up, dispatch, and turn errors into messages and exit
codes in one place."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from dkms_hooks import UPSTREAM_RELEASE
from dkms_hooks.cli import cmdline, setup
from dkms_hooks.model import settings
from dkms_hooks.model.context import Context
from dkms_hooks.ops import journal
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
_JSON = {"status", "plan", "conf", "cache", "mok"}


# Each verb's code is imported when the verb runs, never at start-up: `dkms status` and
# `dkms --version` start without the build machinery or pluggy (bench/'s fixed cost). These
# lazy imports are for speed only: no cycle needs them (lint-imports).
def _status(ctx: Context) -> int:
    if ctx.options.json:
        from dkms_hooks.cli import statusjson  # lazy: start-up speed

        statusjson.show_status_json(ctx)
    else:
        from dkms_hooks.cli import status  # lazy: start-up speed

        status.show_status(ctx)
    return 0


def _plan(ctx: Context) -> int:
    from dkms_hooks.cli import planview  # lazy: start-up speed

    return planview.run_plan(ctx)


def _conf(ctx: Context) -> int:
    from dkms_hooks.cli import confcmd  # lazy: start-up speed

    return confcmd.run_conf(ctx)


def _cache(ctx: Context) -> int:
    from dkms_hooks.cli import cachecmd  # lazy: start-up speed

    return cachecmd.run_cache(ctx)


def _mok(ctx: Context) -> int:
    from dkms_hooks.cli import mokcmd  # lazy: start-up speed

    return mokcmd.run_mok(ctx)


_VIEWS: dict[str, Callable[[Context], int]] = {"status": _status, "plan": _plan, "conf": _conf, "cache": _cache,
                                               "mok": _mok}


def dispatch(ctx: Context) -> int:
    action = ctx.options.action
    if action in _VIEWS:
        return _VIEWS[action](ctx)
    from dkms_hooks.cli import handlers  # lazy: start-up speed

    handler = handlers.HANDLERS.get(action)
    if handler is not None:
        code = handler(ctx)
        if ctx.tx.signed_with:
            from dkms_hooks.ops import secureboot  # lazy: only once something was signed

            for warning in secureboot.warnings_for(ctx, ctx.tx.signed_with):
                ctx.console.warn(warning)
        return code
    ctx.console.error(f'Unknown action specified: "{action}"')
    ctx.console.print(cmdline.USAGE.format(prog=sys.argv[0] if sys.argv else "dkms"))
    return 0


def split_event(args: list[str]) -> tuple[list[str], list[str]] | None:
    """``[--option=value...] event SOURCE ARGS...``: the options, and what follows ``event``."""
    for i, a in enumerate(args):
        if a == "event":
            return args[:i], args[i + 1:]
        if not a.startswith("-"):
            return None
    return None


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
        import signal  # lazy: start-up speed

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    console = console if console is not None else Console()
    env = dict(os.environ) if env is None else env
    split = split_event(args)
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
        ctx = setup.build_context(parsed, console, env)
        if event_args is not None:
            from dkms_hooks.cli import events  # lazy: pluggy and the engine, for events only

            return events.run_event(ctx, event_args, system=setup.is_system_dkms(ctx.layout, parsed))
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
            setup.have_one_kernel(ctx, o.action)
        if o.json and o.action and o.action not in _JSON:
            raise DkmsError(2, f"The action {o.action} does not support --json.")
        if o.plan_build and o.action != "plan":
            raise DkmsError(2, "Only the action plan takes --build.")
        ctx = setup.setup_kernels(ctx, o.action)
        setup.check_names(ctx)
        if o.action in _MUTATING:
            with locking.tree_lock(ctx.layout.dkms_tree, ctx.console):
                setup.recover_if_needed(ctx)
                return dispatch(ctx)
        if o.action == "status" and journal.records(ctx):
            from dkms_hooks.transaction import recovery  # lazy: only when a record is left

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
            import traceback  # lazy: --debug only

            traceback.print_exc()
        console.error(f"internal error: {e.__class__.__name__}: {e}",
                      "Run again with --debug for details, and please report it.")
        return EXIT_INTERNAL
