"""The boot-time catch-up (``dkms event boot``, run by dkms-hooks.service and the OpenRC
service): what is missing for the kernel gets built and installed, within a time limit
after which the builds go on in the background."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import write_module

pytestmark = [pytest.mark.kernel, needs_kernel]


def test_a_missing_module_is_built_for_the_kernel(sandbox: Sandbox) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "present")
    write_module(sandbox.source_tree, "missing")
    sandbox.dkms("install", "present/1.0", "-k", k, check=True)
    sandbox.dkms("add", "missing/1.0", check=True)
    res = sandbox.event("boot", k)
    assert res.returncode == 0, res.output
    assert f"  up to date present/1.0, {k}\n" in res.stdout
    assert f"  installed  missing/1.0, {k}\n" in res.stdout
    assert sandbox.dkms("status").stdout == (f"missing/1.0, {k}, x86_64: installed\n"
                                             f"present/1.0, {k}, x86_64: installed\n")
    # the next boot finds nothing to do
    res = sandbox.event("boot", k)
    assert "==> missing" in res.stdout and "installed  " not in res.stdout.split("summary:")[1]


def test_the_boot_does_not_wait_past_the_limit(sandbox: Sandbox) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    (sandbox.etc / "dkms-hooks.toml").write_text("boot_time_limit = 1\n")
    slow = write_module(sandbox.source_tree, "slow")
    (slow / "Makefile").write_text("obj-m := slow.o\n$(shell sleep 6)\n")
    sandbox.dkms("add", "slow/1.0", check=True)
    out = sandbox.root / "boot.log"
    with open(out, "w") as log:  # a file, not a pipe: the background builds keep it open
        rc = subprocess.run([sys.executable, "-m", "dkms_hooks", "event", "boot", k], stdout=log, stderr=log,
                            env=sandbox.env, check=False).returncode
    assert rc == 0, out.read_text()
    assert "dkms-hooks: still building after 1 s; the builds go on in the background" in out.read_text()
    # the command came back while the build (six seconds of make) was still running
    assert sandbox.dkms("status").stdout != f"slow/1.0, {k}, x86_64: installed\n"
    # the build finishes on its own
    for _ in range(120):
        if sandbox.dkms("status").stdout == f"slow/1.0, {k}, x86_64: installed\n":
            break
        time.sleep(0.5)
    assert sandbox.dkms("status").stdout == f"slow/1.0, {k}, x86_64: installed\n"


def test_bad_arguments(sandbox: Sandbox) -> None:
    res = sandbox.event("boot", "a", "b")
    assert (res.returncode, res.stderr) == (2, "\nError! usage: dkms event boot [KERNEL-VERSION]\n")
