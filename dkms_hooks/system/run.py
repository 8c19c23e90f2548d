"""The one place that starts child processes.

argv lists only; a shell is started only to run text that upstream evaluates as shell
(MAKE, PRE_BUILD and the like from a dkms.conf, post_transaction from framework.conf)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False  # see __init__.py
if TYPE_CHECKING:
    from typing import IO, Union

    #: a path for argv (an alias only type checkers see: ``str | ...`` fails at run time on 3.9)
    PathString = Union[str, os.PathLike[str]]

#: set by --debug: every command is shown on stderr before it runs
DEBUG = False


def debug(text: str) -> None:
    if DEBUG:
        print(text, file=sys.stderr, flush=True)

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    elapsed: float


@dataclass(frozen=True)
class RunAs:
    """Another user to run a command as (the unprivileged build user)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


class ToolMissing(Exception):
    def __init__(self, tool: str) -> None:
        super().__init__(f"{tool} not found.")
        self.tool = tool


def run(
    argv: Sequence[PathString],
    *,
    cwd: PathString | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[bytes] | None = DEVNULL,
    stdout: int | IO[bytes] | IO[str] | None = PIPE,
    stderr: int | IO[bytes] | IO[str] | None = None,
    input: str | None = None,
    pass_fds: Sequence[int] = (),
    as_user: RunAs | None = None,
) -> Result:
    """Run argv and wait. stdout is captured (text) unless redirected; a non-zero exit is
    returned, not raised, because most callers map it to one of upstream's exit codes."""
    cmd = tuple(os.fspath(a) for a in argv)
    debug(f"+ {shlex.join(cmd)}" + (f"  (as {as_user.name})" if as_user else ""))
    if as_user is not None:
        env = {**(env if env is not None else os.environ), "HOME": as_user.home, "USER": as_user.name,
               "LOGNAME": as_user.name}
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=None if input is not None else stdin,
            input=input,
            stdout=stdout,
            stderr=stderr,
            text=True,
            errors="surrogateescape",
            check=False,
            pass_fds=tuple(pass_fds),
            user=as_user.uid if as_user else None,
            group=as_user.gid if as_user else None,
            extra_groups=list(as_user.groups) if as_user else None,
        )
    except FileNotFoundError as e:
        if cwd is not None and not Path(cwd).is_dir():
            raise
        raise ToolMissing(cmd[0]) from e
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        debug(f'"{shlex.join(cmd)}" returned non-zero exit code {proc.returncode}.')
    debug(f"  ({elapsed:.3f} s)")
    return Result(cmd, proc.returncode, proc.stdout if isinstance(proc.stdout, str) else "", elapsed)


def run_bytes(argv: Sequence[PathString]) -> bytes | None:
    """Run argv and return its binary stdout, or None when it fails."""
    cmd = [os.fspath(a) for a in argv]
    debug(f"+ {shlex.join(cmd)}")
    try:
        proc = subprocess.run(cmd, stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL, check=False)
    except FileNotFoundError as e:
        raise ToolMissing(cmd[0]) from e
    return proc.stdout if proc.returncode == 0 else None


@contextlib.contextmanager
def pipe_from(argv: Sequence[PathString]) -> Iterator[IO[bytes]]:
    """Run argv with its binary stdout as a stream to read, so a large output is never held
    in memory. Stopping early ends the process."""
    cmd = [os.fspath(a) for a in argv]
    debug(f"+ {shlex.join(cmd)}")
    try:
        proc = subprocess.Popen(cmd, stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL)
    except FileNotFoundError as e:
        raise ToolMissing(cmd[0]) from e
    assert proc.stdout is not None
    try:
        yield proc.stdout
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_shell(
    script: str,
    *,
    variables: Mapping[str, str] | None = None,
    cwd: PathString | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | IO[str] | None = None,
    stderr: int | IO[bytes] | IO[str] | None = None,
    pass_fds: Sequence[int] = (),
    as_user: RunAs | None = None,
) -> Result:
    """Evaluate shell text with bash, as upstream's ``eval`` does: ``variables`` become plain
    (unexported) shell variables, so the text can expand them without make seeing them."""
    prelude = "".join(f"{name}={shlex.quote(value)}\n" for name, value in (variables or {}).items())
    return run(
        ["bash", "-c", prelude + 'eval "$1"', "bash", script],
        cwd=cwd,
        env=env,
        stdout=stdout,
        stderr=stderr,
        pass_fds=pass_fds,
        as_user=as_user,
    )


def which(tool: str, env: Mapping[str, str] | None = None) -> str | None:
    path = (env or os.environ).get("PATH", os.defpath)
    return shutil.which(tool, path=path)
