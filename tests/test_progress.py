"""The live status line and colour: on a real pseudo-terminal only; through a pipe the
output is the plain lines it always was, byte for byte."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KERNELS, SOURCE_PATH, Sandbox, needs_kernel
from modsrc import write_module

from dkms_hooks.system import progress

_LINE = re.compile(r"\r\x1b\[K(\[\d+/\d+ done[^\r\n]*)?")


def test_line_and_fit() -> None:
    p = progress.Progress(io.StringIO(), ["a/1 for 6.1", "b/1 for 6.1", "c/1 for 6.1"], colour=False, interval=60)
    try:
        p.job_started(0)
        p.job_done(1, 77)
        text = p.line()
        assert text.startswith("[1/3 done, 1 skipped, ")
        assert "running: a/1 for 6.1 (0s); waiting: 1 (c/1 for 6.1)" in text
        p.colour = True
        p.job_done(0, 10)
        assert "\x1b[31m1 failed\x1b[0m" in p.line()
        assert progress._fit("\x1b[31mabcdef\x1b[0m", 3) == "\x1b[31mabc\x1b[0m"
    finally:
        p.close()
    assert not progress.live_terminal(io.StringIO(), {"TERM": "xterm"})
    assert progress.paint("ok", "ok", False) == "ok"


def _run_in_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def _sandbox(root: Path, tmp: Path) -> Sandbox:
    for d in ("var/lib/dkms", "usr/src", "lib/modules", "etc/dkms"):
        (root / d).mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(tmp),
           "TMPDIR": str(tmp), **SOURCE_PATH, "DKMS_HOOKS_SYSROOT": str(root), "COLUMNS": "200"}
    sb = Sandbox(root, env)
    sb.add_kernel(KERNELS[0])
    for name in ("pa", "pb"):
        write_module(sb.source_tree, name)
    return sb


def _argv(sb: Sandbox, *args: str) -> list[str]:
    return [sys.executable, "-m", "dkms_hooks", "--dkmstree", str(sb.dkms_tree), "--sourcetree",
            str(sb.source_tree), "--installtree", str(sb.install_tree), *args]


@pytest.mark.kernel
@needs_kernel
def test_parallel_autoinstall_on_a_terminal_and_in_a_pipe(tmp_path: Path) -> None:
    k = KERNELS[0]
    outputs = {}
    for how in ("pty", "pipe"):
        sb = _sandbox(tmp_path / how, tmp_path)
        for m in ("pa", "pb"):
            sb.dkms("add", f"{m}/1.0", check=True)
        argv = _argv(sb, "autoinstall", "-k", k, "-j", "2")
        env = {**sb.env, "TERM": "xterm"}
        if how == "pty":
            rc, out = _run_in_pty(argv, env)
        else:
            proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            rc, out = proc.returncode, proc.stdout
        assert rc == 0, out
        outputs[how] = out.replace(str(sb.root), "ROOT")
    tty = outputs["pty"]
    assert "\r\x1b[K[0/2 done, " in tty and f"running: pa/1.0 for {k} (" in tty
    assert "\x1b" not in outputs["pipe"]
    # what remains without the status line is what the pipe got
    assert _LINE.sub("", tty).replace("\r\n", "\n") == outputs["pipe"]
    assert "Autoinstall on" in outputs["pipe"]


@pytest.mark.kernel
@needs_kernel
def test_summary_colour_on_a_terminal_unless_no_color(tmp_path: Path) -> None:
    for no_color in ("", "1"):
        sb = _sandbox(tmp_path / f"nc{no_color}", tmp_path)
        argv = [sys.executable, "-m", "dkms_hooks", "event", "apt", "trigger"]
        (sb.etc / "dkms-hooks.toml").write_text("jobs = 2\n")
        rc, out = _run_in_pty(argv, {**sb.env, "TERM": "xterm", "NO_COLOR": no_color})
        assert rc == 0, out
        assert "running: " in out  # the status line is not colour: NO_COLOR keeps it
        coloured = f"  \x1b[32minstalled\x1b[0m  pa/1.0, {KERNELS[0]}"
        assert (coloured in out) is (not no_color), out
    # dumb terminals get neither
    sb = _sandbox(tmp_path / "dumb", tmp_path)
    (sb.etc / "dkms-hooks.toml").write_text("jobs = 2\n")
    rc, out = _run_in_pty([sys.executable, "-m", "dkms_hooks", "event", "apt", "trigger"], {**sb.env, "TERM": "dumb"})
    assert rc == 0 and "\x1b" not in out, out


def test_plan_verdicts_in_colour_on_a_terminal_only(sandbox: Sandbox) -> None:
    write_module(sandbox.source_tree, "plain")
    sandbox.dkms("add", "plain/1.0", check=True)
    argv = _argv(sandbox, "plan", "-k", "9.9.9-1-amd64")
    rc, out = _run_in_pty(argv, {**sandbox.env, "TERM": "xterm"})
    assert rc == 1 and "  \x1b[31mblocked\x1b[0m     plain/1.0: no headers" in out, out
    rc, out = _run_in_pty(argv, {**sandbox.env, "TERM": "xterm", "NO_COLOR": "1"})
    assert rc == 1 and "  blocked     plain/1.0: no headers" in out and "\x1b" not in out, out
