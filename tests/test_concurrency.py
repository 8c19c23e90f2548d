"""Many dkms processes on one tree: they take turns on the tree lock, a waiting one says
who holds it, status never waits, nothing is lost or corrupted; a holder killed with
SIGKILL never blocks the next run, wherever it was killed."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import write_module

ARCH = "x86_64"
LEFTOVERS = (".dkms-new", ".dkms-old", ".dkms-del", ".loading", ".tmp_", ".dkms-restore")


def _argv(sandbox: Sandbox, *args: str) -> list[str]:
    return [sys.executable, "-m", "dkms_hooks", "--dkmstree", str(sandbox.dkms_tree), "--sourcetree",
            str(sandbox.source_tree), "--installtree", str(sandbox.install_tree), *args]


def _start(sandbox: Sandbox, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    # a timeout: a run that waits for a dead holder would otherwise hang the suite
    return subprocess.run(_argv(sandbox, *args), env=sandbox.env, check=False, capture_output=True, text=True,
                          timeout=120)


def _waiters(path: Path) -> int:
    st = os.stat(path)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if "->" in line.split() and wanted in line.split())


def _no_leftovers(sandbox: Sandbox) -> None:
    for dirpath, dirs, files in os.walk(sandbox.root):
        for name in dirs + files:
            assert not any(m in name for m in LEFTOVERS), Path(dirpath, name)
    journal = sandbox.dkms_tree / ".dkms-hooks/journal"
    assert not journal.is_dir() or not os.listdir(journal)


def _with_conf(sandbox: Sandbox, name: str, *, autoinstall: bool) -> None:
    src = write_module(sandbox.source_tree, name)
    if not autoinstall:
        (src / "dkms.conf").write_text((src / "dkms.conf").read_text().replace('AUTOINSTALL="yes"\n', ""))


@pytest.mark.kernel
@needs_kernel
def test_many_runs_on_one_tree(sandbox: Sandbox) -> None:
    from test_lifecycle import plant_intree_module

    k = KERNELS[0]
    sandbox.add_kernel(k)
    # a kernel with a module of its own: whichever run comes first (the uninstall, say),
    # depmod never finds the kernel's module tree empty and retires its modules.dep
    plant_intree_module(sandbox, k, "shipped", "1.0")
    for name in ("c0", "c1", "c2"):
        _with_conf(sandbox, name, autoinstall=True)
    for name in ("c3", "c4"):
        _with_conf(sandbox, name, autoinstall=False)
    for name in ("c0", "c1"):
        sandbox.dkms("build", f"{name}/1.0", "-k", k, check=True)
    for name in ("c2", "c3"):
        sandbox.dkms("add", f"{name}/1.0", check=True)
    sandbox.dkms("install", "c4/1.0", "-k", k, check=True)

    mutating = [
        _argv(sandbox, "install", "c0/1.0", "-k", k),
        _argv(sandbox, "install", "c1/1.0", "-k", k),
        _argv(sandbox, "install", "c2/1.0", "-k", k),  # builds first
        _argv(sandbox, "build", "c3/1.0", "-k", k),
        _argv(sandbox, "uninstall", "c4/1.0", "-k", k),
        # what kernel-install and APT's hook start when a kernel and its headers arrive at once
        [sys.executable, "-m", "dkms_hooks", "event", "kernel-install", "add", k, "/boot/x", "/boot/vmlinuz"],
        [sys.executable, "-m", "dkms_hooks", "event", "apt", "headers-postinst", k],
    ]
    fd = os.open(sandbox.dkms_tree, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # this test holds the tree until every run is waiting
    try:
        procs = [_start(sandbox, argv) for argv in mutating]
        statuses = [_start(sandbox, _argv(sandbox, "status")) for _ in range(2)]
        for p in statuses:  # status never waits for the lock
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            assert "waiting for" not in err
        deadline = time.monotonic() + 60
        while _waiters(sandbox.dkms_tree) < len(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _waiters(sandbox.dkms_tree) == len(procs)
    finally:
        os.close(fd)
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
        assert f"dkms: waiting for {sandbox.dkms_tree}, locked by process {os.getpid()} (" in err, err

    res = sandbox.dkms("status", check=True)
    assert res.stdout == "".join(f"c{i}/1.0, {k}, {ARCH}: installed\n" for i in range(3)) + \
        f"c3/1.0, {k}, {ARCH}: built\nc4/1.0, {k}, {ARCH}: built\n"
    dep = (sandbox.install_tree / k / "modules.dep").read_text()
    assert all(f"updates/dkms/c{i}.ko" in dep for i in range(3)) and "c4.ko" not in dep
    assert not list((sandbox.install_tree / k).rglob("c4.ko*"))
    _no_leftovers(sandbox)


@pytest.mark.kernel
@needs_kernel
def test_holder_killed_anywhere_never_blocks(sandbox: Sandbox, tmp_path: Path) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "victim")
    sandbox.dkms("build", "victim/1.0", "-k", k, check=True)
    installed = False
    seen: set[str] = set()
    # killed from outside at growing delays after its operation began: between and inside
    # steps (during a copy, during depmod), not only at the boundaries the crash hook uses
    for delay in (0.0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15):
        verb = "uninstall" if installed else "install"
        log = tmp_path / "steps.log"
        log.unlink(missing_ok=True)
        p = subprocess.Popen(_argv(sandbox, verb, "victim/1.0", "-k", k),
                             env={**sandbox.env, "DKMS_HOOKS_STEP_LOG": str(log)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (log.is_file() and f"{verb}.begin" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(delay)
        p.kill()
        p.communicate()
        seen.add(log.read_text().split()[-1])
        status = _run(sandbox, "status")
        assert status.returncode == 0, status.stderr
        assert "waiting for" not in status.stderr
        assert status.stdout in (f"victim/1.0, {k}, {ARCH}: installed\n", f"victim/1.0, {k}, {ARCH}: built\n")
        installed = status.stdout.endswith("installed\n")
        files = list((sandbox.install_tree / k).rglob("victim.ko*"))
        assert len(files) == (1 if installed else 0)
        dep = sandbox.install_tree / k / "modules.dep"
        # (depmod drops an empty modules.dep, and skips a kernel without one, as upstream's does)
        assert not dep.is_file() or installed == ("updates/dkms/victim.ko" in dep.read_text())
        _no_leftovers(sandbox)
        again = _run(sandbox, verb, "victim/1.0", "-k", k)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "waiting for" not in again.stderr
        installed = verb == "install"
    assert len(seen) > 2, seen  # the kills did land at different places

    # a run waiting for a holder that gets killed goes on, after recovering its work; the
    # holder's child (a POST_REMOVE script that sleeps) outlives it without keeping the lock
    assert _run(sandbox, "install", "victim/1.0", "-k", k).returncode == 0
    src = sandbox.source_tree / "victim-1.0"
    (src / "slow.sh").write_text("#!/bin/sh\nsleep 60\n")
    (src / "slow.sh").chmod(0o755)
    (src / "dkms.conf").write_text((src / "dkms.conf").read_text() + 'POST_REMOVE="slow.sh"\n')
    log = tmp_path / "steps.log"
    log.unlink(missing_ok=True)
    holder = subprocess.Popen(_argv(sandbox, "uninstall", "victim/1.0", "-k", k),
                              env={**sandbox.env, "DKMS_HOOKS_STEP_LOG": str(log)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (log.is_file() and "uninstall.originals-restored" in log.read_text()) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        waiter = _start(sandbox, _argv(sandbox, "install", "victim/1.0", "-k", k))
        while _waiters(sandbox.dkms_tree) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        holder.kill()
        holder.wait()
        out, err = waiter.communicate(timeout=120)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the sleeping script
    assert waiter.returncode == 0, out + err
    assert f"locked by process {holder.pid} (dkms uninstall victim/1.0 -k {k})" in err
    assert _run(sandbox, "status").stdout == f"victim/1.0, {k}, {ARCH}: installed\n"
    _no_leftovers(sandbox)


def test_a_record_pointing_outside_the_trees_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data").write_text("keep me")
    journal = sandbox.dkms_tree / ".dkms-hooks/journal"
    journal.mkdir(parents=True)
    record = {"op": "unbuild", "module": "m", "version": "1", "kver": "6.1", "arch": ARCH, "pid": 1,
              "step": "moved-aside", "data": {"aside": str(outside)}}
    (journal / "1-1-0.json").write_text(json.dumps(record))
    res = sandbox.dkms("status")
    assert res.returncode == 0
    assert f"dkms: ignoring journal record {journal}/1-1-0.json: path outside the trees: {outside}\n" in res.stderr
    assert (outside / "data").read_text() == "keep me"
