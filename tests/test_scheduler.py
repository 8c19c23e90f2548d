"""The job scheduler: dependencies, budget, output order; the budget shared with real make."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import KERNELS, SOURCE_PATH, Sandbox, needs_kernel
from modsrc import write_module

from dkms_hooks.system.console import BufferConsole, Console
from dkms_hooks.transaction.scheduler import JobServer, run_jobs


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.started: list[str] = []

    def run(self, job: str, console: BufferConsole) -> int:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.started.append(job)
        console.print(f"out {job}")
        console.eprint(f"err {job}")
        time.sleep(0.05 if job != "slow" else 0.3)
        with self.lock:
            self.now -= 1
        return 1 if job == "bad" else 0


def test_order_budget_and_dependencies(capsys: pytest.CaptureFixture[str]) -> None:
    jobs = ["slow", "a", "b", "c", "after-a", "bad", "after-bad"]
    deps = {4: {1}, 6: {5}}
    rec = Recorder()
    js = JobServer(2)
    results = run_jobs(jobs, lambda i: deps.get(i, set()), rec.run, budget=2, console=Console(), jobserver=js)
    js.close()
    assert results == [0, 0, 0, 0, 0, 1, None]  # after-bad never ran: its dependency failed
    assert rec.peak == 2
    assert rec.started.index("after-a") > rec.started.index("a")
    out = capsys.readouterr()
    # printed whole and in job order, though "slow" finished last
    assert out.out == "".join(f"out {j}\n" for j in jobs[:-1])
    assert out.err == "".join(f"err {j}\n" for j in jobs[:-1])


def test_a_freed_slot_is_used_while_someone_else_holds_a_token() -> None:
    """An early depmod takes a token while a build holds the other: when the build ends,
    the next job starts at once, not when the depmod gives its token back."""
    js = JobServer(2)
    holding = threading.Event()
    give_back = threading.Event()
    given_back = threading.Event()
    started_while_held: list[str] = []
    threads: list[threading.Thread] = []

    def holder() -> None:
        js.acquire()
        holding.set()
        give_back.wait(5)
        given_back.set()
        js.release()

    def run_one(job: str, console: BufferConsole) -> int:
        if job == "first":
            threads.append(threading.Thread(target=holder, daemon=True))
            threads[0].start()
            return 0
        if job == "long":
            holding.wait(20)
            time.sleep(0.3)  # the main loop is now waiting for a token for "next"
            return 0
        if not given_back.is_set():
            started_while_held.append(job)
        give_back.set()
        return 0

    results = run_jobs(["long", "first", "next"], lambda i: set(), run_one, budget=2, console=Console(), jobserver=js)
    threads[0].join(10)  # its token goes back before the pipe is closed
    js.close()
    assert results == [0, 0, 0]
    assert started_while_held == ["next"]


def test_a_cycle_does_not_hang() -> None:
    js = JobServer(2)
    results = run_jobs(["x", "y", "z"], lambda i: {0: {1}, 1: {0}}.get(i, set()), lambda j, c: 0, budget=2,
                       console=Console(), jobserver=js)
    js.close()
    assert results == [None, None, 0]


def test_concurrent_makes_share_one_budget(tmp_path: Path) -> None:
    """Two makes asked for -j4 each, as jobserver clients of one budget of 3: no more than
    three recipes ever run at once, and the budget is used."""
    log = tmp_path / "log"
    targets = " ".join(f"t{i}" for i in range(6))
    (tmp_path / "Makefile").write_text(
        f"all: {targets}\n"
        "t%:\n"
        f"\t@echo start $$(date +%s.%N) >> {log}; sleep 0.4; echo end $$(date +%s.%N) >> {log}\n")
    js = JobServer(3)
    env = {"PATH": "/usr/bin:/bin", "MAKEFLAGS": js.makeflags}
    procs = [subprocess.Popen(["make", "-s", "-C", str(tmp_path)], env=env, pass_fds=js.fds) for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    js.close()
    events = sorted((float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines()))
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    # each make also holds its implicit slot: two makes are at most 2 + (3 - 1) tokens
    assert peak <= 4
    assert peak >= 3


@pytest.mark.kernel
@needs_kernel
def test_parallel_autoinstall_prints_what_a_serial_one_prints(tmp_path: Path) -> None:
    outputs = {}
    for jobs in ("1", "2"):
        root = tmp_path / f"j{jobs}"
        for d in ("var/lib/dkms", "usr/src", "lib/modules", "etc/dkms"):
            (root / d).mkdir(parents=True)
        (root / "etc/os-release").write_text("ID=debian\n")
        sb = Sandbox(root, {**_env(tmp_path), "DKMS_HOOKS_SYSROOT": str(root)})
        k = KERNELS[0]
        sb.add_kernel(k)
        write_module(sb.source_tree, "pbase")
        dep = write_module(sb.source_tree, "pdep")
        (dep / "dkms.conf").write_text((dep / "dkms.conf").read_text() + 'BUILD_DEPENDS[0]="pbase"\n')
        write_module(sb.source_tree, "pfail", extra_c="#error broken")
        write_module(sb.source_tree, "pother")
        for m in ("pdep", "pbase", "pfail", "pother"):
            sb.dkms("add", f"{m}/1.0", check=True)
        res = sb.dkms("autoinstall", "-k", k, "-j", jobs)
        assert res.returncode == 11
        # the one intended difference: a serial build runs make -jN, parallel ones the jobserver
        outputs[jobs] = (res.stdout + res.stderr).replace(str(root), "ROOT").replace("make -j1 ", "make ")
        if jobs == "2":
            log = (sb.dkms_tree / f"pother/1.0/{k}/x86_64/log/make.log").read_text()
            assert f"# command: make KERNELRELEASE={k} " in log  # the jobserver, not -jN
    assert outputs["1"] == outputs["2"]
    assert "Autoinstall on" in outputs["1"] and "succeeded for module(s) pbase pother pdep." in outputs["1"]


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path), **SOURCE_PATH}


