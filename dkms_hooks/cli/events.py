"""``dkms event SOURCE ARGS...``: the plugins turn a host's call into an Event, and the
engine runs it as one transaction, at boot within boot_time_limit."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable

from dkms_hooks.cli import setup
from dkms_hooks.model import distro
from dkms_hooks.model.context import Context
from dkms_hooks.plugins import manager
from dkms_hooks.plugins.calls import PluginCalls
from dkms_hooks.system import locking
from dkms_hooks.system.errors import EXIT_INTERNAL, DkmsError, report
from dkms_hooks.transaction import engine


def run_event(ctx: Context, event_args: list[str], *, system: bool = False) -> int:
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
            setup.recover_if_needed(ctx)
            return engine.handle(ctx, event, notes=notes)

    limit = ctx.hooks.boot_time_limit if event.at_boot else 0
    return _within(ctx, limit, work) if limit else work()


def _within(ctx: Context, seconds: int, work: Callable[[], int]) -> int:
    """Run ``work`` in a child and wait for it at most ``seconds``: the boot goes on after
    that, and the builds go on in the background (the unit's KillMode=process spares them)."""

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
