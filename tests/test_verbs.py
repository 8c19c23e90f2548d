"""The verbs beyond the basic lifecycle, on real headers: match, the kernel hooks,
BUILD_EXCLUSIVE skips, post_transaction, --directive, and concurrent runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel
from modsrc import builds_overlapped, write_module, write_overlap_probe

pytestmark = [pytest.mark.kernel, needs_kernel]


def test_kernel_postinst_then_prerm(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", "dkms_hooks_example/1.0", check=True)
    res = sandbox.dkms("kernel_postinst", "-k", k, check=True)
    assert f"Autoinstall on {k} succeeded for module(s) dkms_hooks_example.\n" in res.stdout
    assert list((sandbox.install_tree / k / "updates/dkms").glob("dkms_hooks_example.ko*"))
    res = sandbox.dkms("kernel_prerm", "-k", k, check=True)
    assert f"dkms: removing module dkms_hooks_example/1.0 for kernel {k} (x86_64)\n" in res.stderr
    assert res.stdout.count("Running depmod... done.") == 1  # one depmod for the kernel, at the end
    assert sandbox.dkms("status").stdout == "dkms_hooks_example/1.0: added\n"
    assert not (sandbox.install_tree / k / "updates").exists()


def test_kernel_preinst_unbuilds_only_autoinstall_modules(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "auto1")
    manual = write_module(sandbox.source_tree, "manual1")
    (manual / "dkms.conf").write_text((manual / "dkms.conf").read_text().replace('AUTOINSTALL="yes"', ""))
    for m in ("auto1", "manual1"):
        sandbox.dkms("build", f"{m}/1.0", "-k", k, check=True)
    sandbox.dkms("kernel_preinst", "-k", k, check=True)
    assert sandbox.dkms("status").stdout == f"auto1/1.0: added\nmanual1/1.0, {k}, x86_64: built\n"


@pytest.mark.skipif(len(KERNELS) < 2, reason="needs headers for two kernels")
def test_match_installs_what_the_template_kernel_has(sandbox: Sandbox) -> None:
    template, target = KERNELS[0], KERNELS[1]
    sandbox.add_kernel(template)
    sandbox.add_kernel(target)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("install", "dkms_hooks_example/1.0", "-k", template, check=True)
    res = sandbox.dkms("match", f"--templatekernel={template}", "-k", target, check=True)
    assert res.stdout.startswith(f"\nMatching modules in kernel: {target} (x86_64)\n"
                                 f"to the configuration of kernel: {template} (x86_64)\n"
                                 "Module:  dkms_hooks_example\nVersion: 1.0\n")
    assert f"dkms_hooks_example/1.0, {target}, x86_64: installed\n" in sandbox.dkms("status").stdout
    res = sandbox.dkms("match", f"--templatekernel={target}", "-k", target)
    assert (res.returncode, res.stderr) == (
        2, "\nError! The templatekernel and the specified kernel version are the same.\n")


def test_build_exclusive_is_exit_77_and_skipped_in_autoinstall(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    src = write_module(sandbox.source_tree, "excl")
    (src / "dkms.conf").write_text((src / "dkms.conf").read_text() + 'BUILD_EXCLUSIVE_KERNEL="^1\\.2\\."\n')
    sandbox.dkms("add", "excl/1.0", check=True)
    before = sandbox.snapshot()
    res = sandbox.dkms("build", "excl/1.0", "-k", k)
    assert res.returncode == 77
    assert res.stderr == (f"Warning: The {sandbox.dkms_tree}/excl/1.0/{k}/x86_64/dkms.conf\n"
                          "for module excl/1.0 includes BUILD_EXCLUSIVE directives\n"
                          "which do not match this kernel/arch/config for any modules.\n"
                          "This indicates that it should not be built.\n")
    assert sandbox.snapshot() == before
    res = sandbox.dkms("autoinstall", "-k", k, check=True)
    assert f"Autoinstall on {k} was skipped for module(s) excl.\n" in res.stdout


def test_post_transaction_runs_and_logs(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    (sandbox.etc / "framework.conf.d/post.conf").write_text('post_transaction="echo done for $kernelver"\n')
    res = sandbox.dkms("install", "dkms_hooks_example/1.0", "-k", k, check=True)
    assert res.stdout.endswith("Running depmod... done.\nExecuting post-transaction command... done.\n")
    log = (sandbox.dkms_tree / "post_transaction.log").read_text()
    assert f"# command: echo done for {k}\ndone for {k}\n\n# exit code: 0\n" in log


def test_directive_overrides_and_is_shown(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    src = write_module(sandbox.source_tree, "direct")
    (src / "dkms.conf").write_text((src / "dkms.conf").read_text().replace('BUILT_MODULE_NAME[0]="direct"',
                                                                            'BUILT_MODULE_NAME[0]="wrong"'))
    res = sandbox.dkms("build", "direct/1.0", "-k", k, "--directive=BUILT_MODULE_NAME=direct", check=True)
    assert res.stdout.startswith('DIRECTIVE: BUILT_MODULE_NAME="direct"\n')
    assert list((sandbox.dkms_tree / f"direct/1.0/{k}/x86_64/module").glob("direct.ko*"))


def test_pre_and_post_build_scripts_log_to_make_log(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    src = write_module(sandbox.source_tree, "scripted")
    (src / "pre.sh").write_text("#!/bin/sh\necho pre-build ran in $(pwd)\n")
    (src / "pre.sh").chmod(0o755)
    (src / "dkms.conf").write_text((src / "dkms.conf").read_text() + 'PRE_BUILD="pre.sh"\n')
    res = sandbox.dkms("build", "scripted/1.0", "-k", k, check=True)
    assert "Running the pre_build script... done.\n" in res.stdout
    log = (sandbox.dkms_tree / f"scripted/1.0/{k}/x86_64/log/make.log").read_text()
    assert f"pre-build ran in {sandbox.dkms_tree}/scripted/1.0/build\n" in log


def test_concurrent_runs_on_one_tree_serialise(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    names = [f"conc{i}" for i in range(3)]
    for n in names:
        write_module(sandbox.source_tree, n)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dkms_hooks", "--dkmstree", str(sandbox.dkms_tree), "--sourcetree",
             str(sandbox.source_tree), "--installtree", str(sandbox.install_tree), "install", f"{n}/1.0", "-k", k],
            env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in names
    ]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert any("waiting for" in err and "locked by process" in err for _, err in outs)
    assert sandbox.dkms("status").stdout == "".join(f"{n}/1.0, {k}, x86_64: installed\n" for n in names)
    dep = (sandbox.install_tree / k / "modules.dep").read_text()
    assert all(f"updates/dkms/{n}.ko" in dep for n in names)



@pytest.mark.skipif(len(KERNELS) < 2, reason="needs headers for two kernels")
def test_several_kernels_build_side_by_side(sandbox: Sandbox) -> None:
    """-k given several times with a job budget: the kernels build at once, the output is
    what a serial run prints, kernel by kernel; a failing kernel is the run's error and the
    others' work is kept."""
    ks = KERNELS[:2]
    for k in ks:
        sandbox.add_kernel(k, installed=False)
    marks = sandbox.root / "marks"
    write_overlap_probe(sandbox.source_tree, "both", marks)
    sandbox.dkms("add", "both/1.0", check=True)
    res = sandbox.dkms("install", "both/1.0", "-k", ks[0], "-k", ks[1], "-j", "2")
    assert res.returncode == 0, res.output
    assert builds_overlapped(marks, ks), [(marks / f"seen-{k}").read_text() for k in ks]
    first = res.stdout.index(f"Installing {sandbox.install_tree}/{ks[0]}/")
    assert first < res.stdout.index(f"Installing {sandbox.install_tree}/{ks[1]}/")
    assert res.stdout.count("Building module(s)... done.") == 2
    status = sandbox.dkms("status").stdout
    assert all(f"both/1.0, {k}, x86_64: installed" in status for k in ks), status

    write_module(sandbox.source_tree, "half")
    sandbox.dkms("add", "half/1.0", check=True)
    res = sandbox.dkms("build", "half/1.0", "-k", "9.9.9-nohdr", "-k", ks[0], "-j", "2")
    assert res.returncode == 21, res.output
    assert "Your kernel headers for kernel 9.9.9-nohdr cannot be found" in res.stderr
    assert f"half/1.0, {ks[0]}, x86_64: built" in sandbox.dkms("status").stdout
