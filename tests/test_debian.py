"""Debian's helpers by path: dkms_autoinstaller and common.postinst, on real headers, with
the trees pointed into the sandbox through framework.conf."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel


def helper(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    (sandbox.etc / "framework.conf").write_text(
        f'dkms_tree="{sandbox.dkms_tree}"\nsource_tree="{sandbox.source_tree}"\n'
        f'install_tree="{sandbox.install_tree}"\n'
    )
    return subprocess.run([sys.executable, "-m", "dkms_hooks.cli.debian", *args], env=sandbox.env,
                          capture_output=True, text=True)


def test_autoinstaller_without_headers(sandbox: Sandbox) -> None:
    res = helper(sandbox, "dkms_autoinstaller", "start", "9.9.9-nothing")
    assert (res.returncode, res.stdout) == (
        0, "Automatic installation of modules for kernel 9.9.9-nothing was skipped since the kernel headers for "
           "this kernel do not seem to be installed.\n")
    assert helper(sandbox, "dkms_autoinstaller", "bogus").returncode == 2
    assert helper(sandbox, "dkms_autoinstaller", "stop").returncode == 0


@pytest.mark.kernel
@needs_kernel
def test_autoinstaller_installs(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", "dkms_hooks_example/1.0", check=True)
    res = helper(sandbox, "dkms_autoinstaller", "start", k)
    assert res.returncode == 0, res.stderr
    assert f"Autoinstall on {k} succeeded for module(s) dkms_hooks_example.\n" in res.stdout


@pytest.mark.kernel
@needs_kernel
def test_common_postinst_builds_for_every_kernel_when_asked(sandbox: Sandbox) -> None:
    for k in KERNELS:
        sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    (sandbox.etc / "framework.conf.d/all.conf").write_text("autoinstall_all_kernels=1\n")
    res = helper(sandbox, "common.postinst", "dkms_hooks_example", "1.0", "/nonexistent", "", "")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "Loading new dkms_hooks_example/1.0 DKMS files..."
    expected = KERNELS[0] if len(KERNELS) == 1 else ", ".join(KERNELS[:-1]) + " and " + KERNELS[-1]
    assert lines[1] == f"Building for {expected}"
    for k in KERNELS:
        assert f"Building initial module dkms_hooks_example/1.0 for {k}" in lines
    status = sandbox.dkms("status").stdout
    assert status == "".join(f"dkms_hooks_example/1.0, {k}, x86_64: installed\n" for k in KERNELS)
    # again, as on a package upgrade: the old registration is removed first
    res = helper(sandbox, "common.postinst", "dkms_hooks_example", "1.0", "/nonexistent", "", "")
    assert res.stdout.startswith("Removing old dkms_hooks_example/1.0 DKMS files...\n")
    assert sandbox.dkms("status").stdout == status


def test_common_postinst_usage_and_no_autoinstall(sandbox: Sandbox) -> None:
    assert helper(sandbox, "common.postinst").returncode == 1
    (sandbox.etc / "no-autoinstall").touch()
    res = helper(sandbox, "common.postinst", "x", "1")
    assert (res.returncode, res.stdout) == (0, "autoinstall for dkms modules has been disabled.\n")


@pytest.mark.kernel
@needs_kernel
@pytest.mark.skipif(len(KERNELS) < 2, reason="needs headers for two kernels")
@pytest.mark.parametrize("keep_going", [True, False])
def test_common_postinst_continue_on_error(sandbox: Sandbox, keep_going: bool) -> None:
    from modsrc import write_module

    for k in KERNELS:
        sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "fails", extra_c="#error broken on purpose")
    (sandbox.etc / "framework.conf.d/all.conf").write_text(
        "autoinstall_all_kernels=1\n" + ("" if keep_going else "continue_on_error=false\n"))
    res = helper(sandbox, "common.postinst", "fails", "1.0", "", "", "")
    assert res.returncode == 10
    tried = [k for k in KERNELS if f"Building initial module fails/1.0 for {k}" in res.stdout]
    if keep_going:
        assert tried == KERNELS
        assert res.stdout.endswith("Builds for the following kernel(s) failed: " + " ".join(KERNELS) + "\n")
    else:
        assert tried == KERNELS[:1]
        assert "Builds for the following kernel(s) failed" not in res.stdout
