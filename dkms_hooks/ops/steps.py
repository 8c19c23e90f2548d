"""Upstream's invoke_command: the ``Doing thing... done.`` line, and the command/exit
code/elapsed block that make.log and post_transaction.log are made of."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.system import run

RULE = "-" * 64


def _elapsed(seconds: int) -> str:
    h, rem = divmod(max(seconds, 0), 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def _finish(ctx: Context, rc: int, command: str) -> int:
    if rc > 0:
        ctx.console.print(f"(bad exit status: {rc})", end="")
        if not ctx.options.verbose:
            ctx.console.print(f"\nFailed command:\n{command}")
    else:
        ctx.console.print(" done.")
    return rc


def invoke_shell(
    ctx: Context,
    command: str,
    description: str,
    logfile: Path | None,
    *,
    cwd: Path | None = None,
    variables: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    background: bool = True,
    as_user: run.RunAs | None = None,
) -> int:
    """Evaluate ``command`` as shell text, as upstream's invoke_command does."""
    console = ctx.console
    if ctx.options.verbose:
        console.print(command)
    else:
        console.print(f"{description}...", end="")
    env = env if env is not None else ctx.build_env()
    fds: tuple[int, ...] = ()
    if ctx.jobserver is not None:
        env = {**env, "MAKEFLAGS": ctx.jobserver.makeflags}
        fds = ctx.jobserver.fds
    if logfile is not None:
        # no following links: with build_user the directory belongs to the build user, who
        # must not be able to point root's appends at another file
        fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "a", encoding="utf-8", errors="surrogateescape") as log:
            log.write(f"\n{description}\n# command: {command}\n")
            log.flush()
            start = int(time.monotonic())
            res = run.run_shell(command, variables=variables, cwd=cwd, env=env, stdout=log, stderr=run.STDOUT,
                                pass_fds=fds, as_user=as_user)
            end = int(time.monotonic())
            log.write(f"\n# exit code: {res.returncode}\n# elapsed time: {_elapsed(end - start)}\n{RULE}\n")
    elif background and not ctx.options.verbose:
        res = run.run_shell(command, variables=variables, cwd=cwd, env=env, stdout=run.DEVNULL, stderr=run.STDOUT,
                            pass_fds=fds, as_user=as_user)
    else:
        res = run.run_shell(command, variables=variables, cwd=cwd, env=env, stdout=None, pass_fds=fds,
                            as_user=as_user)
    return _finish(ctx, res.returncode, command)


def invoke_python(ctx: Context, command: str, description: str, func: Callable[[], int]) -> int:
    """The same decoration around work done in Python (upstream runs a shell function)."""
    if ctx.options.verbose:
        ctx.console.print(command)
    else:
        ctx.console.print(f"{description}...", end="")
    return _finish(ctx, func(), command)
