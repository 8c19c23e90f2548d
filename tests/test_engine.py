"""The event engine on real headers: jobs for every kernel with headers, failures kept to
their module, one depmod per kernel, the summary, critical modules, queued work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import builds_overlapped, write_module, write_overlap_probe


def test_unknown_source_and_nothing_to_do(sandbox: Sandbox) -> None:
    res = sandbox.event("frobnicator", "x")
    assert (res.returncode, res.stderr) == (2, "\nError! No adapter handles events from 'frobnicator'.\n")
    res = sandbox.event("kernel-install", "inspect")
    assert (res.returncode, res.output) == (0, "")


def test_missing_headers_is_a_note_with_the_package_to_install(sandbox: Sandbox) -> None:
    write_module(sandbox.source_tree, "lonely")
    sandbox.dkms("add", "lonely/1.0", check=True)
    res = sandbox.event("apt", "headers-postinst", "9.9.9-1-amd64")
    assert res.returncode == 0
    assert ("note: kernel 9.9.9-1-amd64: no headers at "
            f"{sandbox.install_tree}/9.9.9-1-amd64/build, nothing built (install linux-headers-9.9.9-1-amd64)"
            in res.stdout)


@pytest.mark.kernel
@needs_kernel
def test_a_broken_module_never_stops_the_good_one(sandbox: Sandbox) -> None:
    for k in KERNELS:
        sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "good")
    write_module(sandbox.source_tree, "broken", extra_c="#error broken on purpose")
    res = sandbox.event("apt", "trigger")
    assert res.returncode == 0, res.output
    for k in KERNELS:
        assert list((sandbox.install_tree / k / "updates/dkms").glob("good.ko*"))
        assert f"  installed  good/1.0, {k}\n" in res.stdout
        log = sandbox.dkms_tree / f".dkms-hooks/failed/broken/1.0/{k}-x86_64.make.log"
        assert (f"  failed     broken/1.0, {k}: exit 10: Bad return status for module build on kernel: {k} (x86_64) "
                f"(log: {log}) [optional: the transaction goes on]\n" in res.stdout)
        # each kernel's failure keeps its own log
        assert f"make.log for broken/1.0 for kernel {k} (x86_64)" in log.read_text()
        # one depmod per kernel, however many modules changed
        assert res.stdout.count(f"Running depmod for {k}... done.") == 1
        assert "good.ko" in (sandbox.install_tree / k / "modules.dep").read_text()
    assert res.stdout.index("dkms-hooks summary:") > res.stdout.index("Running depmod for")
    # signing is prepared once per kernel, not once per module, while the first builds run
    # (the MOK pair is generated meanwhile): every module is signed with that pair
    assert res.stdout.count("Signing key: ") == len(KERNELS)
    assert res.stdout.index("Signing key: ") < res.stdout.index("==> ")
    import subprocess

    for k in KERNELS:
        good = next((sandbox.install_tree / k / "updates/dkms").glob("good.ko*"))
        signer = subprocess.run(["modinfo", "-F", "signer", str(good)], capture_output=True, text=True).stdout
        assert signer.strip() == "DKMS module signing key", good


@pytest.mark.kernel
@needs_kernel
def test_critical_module_fails_the_transaction(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    (sandbox.etc / "dkms-hooks.toml").write_text('critical_modules = ["zfsish"]\n')
    write_module(sandbox.source_tree, "zfsish", extra_c="#error broken on purpose")
    sandbox.dkms("add", "zfsish/1.0", check=True)
    res = sandbox.event("kernel-install", "add", k, "/boot/x", "/boot/vmlinuz")
    assert res.returncode == 1
    assert f"  failed     zfsish/1.0, {k}: exit 10" in res.stdout and "[critical]" in res.stdout
    assert res.stderr.endswith(f"Error! critical module zfsish/1.0 failed for kernel {k}.\n")


@pytest.mark.kernel
@needs_kernel
def test_kernel_removed_unbuilds_everything(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "gone")
    sandbox.dkms("install", "gone/1.0", "-k", k, check=True)
    res = sandbox.event("kernel-install", "remove", k, "/boot/entry")
    assert res.returncode == 0, res.output
    assert f"  removed    gone/1.0, {k}\n" in res.stdout
    assert sandbox.dkms("status").stdout == "gone/1.0: added\n"
    assert not list((sandbox.install_tree / k).rglob("gone.ko*"))


@pytest.mark.kernel
@needs_kernel
def test_work_queued_inside_apt_runs_once_at_post_invoke(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "queued")
    inside_apt = {"DPKG_FRONTEND_LOCKED": "1"}
    res = sandbox.event("apt", "source-configure", "queued", "1.0", env=inside_apt)
    assert res.stdout == "dkms-hooks: source added queued/1.0 queued until the end of the package transaction\n"
    res = sandbox.event("apt", "headers-postinst", k, env=inside_apt)
    assert sandbox.dkms("status").stdout == ""
    res = sandbox.event("apt", "post-invoke")
    assert res.returncode == 0, res.output
    assert f"  installed  queued/1.0, {k}\n" in res.stdout
    assert res.stdout.count("==> queued/1.0 for kernel") == 1
    assert not (sandbox.dkms_tree / ".dkms-hooks/queue").exists()
    assert sandbox.event("apt", "post-invoke").output == ""


@pytest.mark.kernel
@pytest.mark.skipif(len(KERNELS) < 2, reason="needs headers for two kernels")
def test_one_module_builds_for_several_kernels_at_once(sandbox: Sandbox) -> None:
    """Each kernel's build runs in a directory of its own, so one module's builds overlap;
    a module whose dkms.conf has build scripts keeps the shared directory and its order."""
    ks = KERNELS[:2]
    for k in ks:
        sandbox.add_kernel(k, installed=False)
    (sandbox.etc / "dkms-hooks.toml").write_text("jobs = 2\n")
    marks = sandbox.root / "marks"
    write_overlap_probe(sandbox.source_tree, "twice", marks)
    scripted = write_module(sandbox.source_tree, "scripted")
    (scripted / "post.sh").write_text("#!/bin/sh\ntrue\n")
    (scripted / "post.sh").chmod(0o755)
    with open(scripted / "dkms.conf", "a") as conf:
        conf.write('POST_BUILD="post.sh"\n')
    res = sandbox.event("apt", "trigger")
    assert res.returncode == 0, res.output
    assert builds_overlapped(marks, ks), [(marks / f"seen-{k}").read_text() for k in ks]
    for k in ks:
        for name in ("twice", "scripted"):
            assert f"  installed  {name}/1.0, {k}\n" in res.stdout
        private = sandbox.dkms_tree / f".dkms-hooks/build/twice/1.0/{k}-x86_64"
        assert str(private) in (sandbox.dkms_tree / f"twice/1.0/{k}/x86_64/log/make.log").read_text()
        shared = sandbox.dkms_tree / "scripted/1.0/build"
        assert str(shared) in (sandbox.dkms_tree / f"scripted/1.0/{k}/x86_64/log/make.log").read_text()
    # nothing left behind once the builds are done
    assert not (sandbox.dkms_tree / ".dkms-hooks/build").exists()


@pytest.mark.kernel
@pytest.mark.skipif(len(KERNELS) < 2, reason="needs headers of two kernels")
def test_the_kernel_with_the_slowest_depmod_builds_first(sandbox: Sandbox) -> None:
    """Its depmod then runs while the other kernels build, not alone at the end. Without a
    big module tree anywhere, the newest kernel goes first."""
    old, new = KERNELS[0], KERNELS[-1]
    for k in (old, new):
        sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "first")
    res = sandbox.event("apt", "trigger")
    assert res.returncode == 0, res.output
    assert res.stdout.index(f"==> first/1.0 for kernel {new}") < res.stdout.index(f"==> first/1.0 for kernel {old}")

    sandbox.dkms("remove", "first/1.0", "--all", check=True)
    # an installed module tree of thousands of modules (what depmod reads) on the older kernel
    (sandbox.install_tree / old / "modules.dep").write_text(
        "".join(f"kernel/drivers/x/m{i}.ko.xz:\n" for i in range(20000)))
    res = sandbox.event("apt", "trigger")
    assert res.returncode == 0, res.output
    assert res.stdout.index(f"==> first/1.0 for kernel {old}") < res.stdout.index(f"==> first/1.0 for kernel {new}")
    assert "first.ko" in (sandbox.install_tree / old / "modules.dep").read_text()


def test_a_source_directory_dkms_would_not_find_is_a_failure_with_the_reason(sandbox: Sandbox) -> None:
    """dkms reads NAME/VERSION from /usr/src/NAME-VERSION: a package shipping its source
    elsewhere under /usr/src cannot be registered, and the summary says why."""
    src = write_module(sandbox.source_tree, "foo", "1.2")
    src.rename(sandbox.source_tree / "foo-git")
    (sandbox.source_tree / "empty-1").mkdir()
    (sandbox.source_tree / "empty-1/dkms.conf").write_text("# nothing\n")
    before = sandbox.snapshot()
    res = sandbox.event("pacman", "install", stdin="usr/src/foo-git/dkms.conf\nusr/src/empty-1/dkms.conf\n")
    assert res.returncode == 0, res.output
    assert (f"  failed     foo/1.2: its source is in {sandbox.source_tree}/foo-git, but dkms reads foo/1.2 from "
            f"{sandbox.source_tree}/foo-1.2 [optional: the transaction goes on]\n") in res.stdout
    assert (f"  failed     {sandbox.source_tree}/empty-1: its dkms.conf sets no PACKAGE_NAME and PACKAGE_VERSION "
            "[optional: the transaction goes on]\n") in res.stdout
    assert sandbox.snapshot() == before


@pytest.mark.kernel
@needs_kernel
def test_a_failed_build_depends_stops_its_dependents(sandbox: Sandbox) -> None:
    """One planner for every request: a dependent of a module that failed is not built (as
    upstream's autoinstall does), and the summary says why."""
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "base", extra_c="#error broken on purpose")
    write_module(sandbox.source_tree, "top", conf='PACKAGE_NAME="top"\nPACKAGE_VERSION="1.0"\n'
                 'BUILT_MODULE_NAME[0]="top"\nDEST_MODULE_LOCATION[0]="/updates"\nAUTOINSTALL="yes"\n'
                 'BUILD_DEPENDS[0]="base"\n')
    res = sandbox.event("apt", "trigger")
    assert res.returncode == 0, res.output
    assert f"  failed     base/1.0, {k}: exit 10" in res.stdout
    assert (f"  failed     top/1.0, {k}: not built: its BUILD_DEPENDS base failed [optional: the transaction "
            "goes on]\n") in res.stdout
    assert "==> top/1.0" not in res.stdout
    plain = sandbox.dkms("autoinstall", "-k", k)
    assert plain.returncode == 11 and "top/1.0 autoinstall failed due to missing dependencies: base." in plain.stdout


@pytest.mark.kernel
@needs_kernel
def test_plugins_hear_of_every_module_installed_and_removed(sandbox: Sandbox, tmp_path: Path) -> None:
    """dkms_module_installed and dkms_module_removed reach a third-party plugin."""
    k = KERNELS[0]
    sandbox.add_kernel(k)
    site = tmp_path / "site"
    site.mkdir()
    heard = tmp_path / "heard"
    (site / "listening_dkms.py").write_text(
        "from dkms_hooks import hookimpl\n\n"
        "@hookimpl\n"
        "def dkms_module_installed(module, version, kver, arch, layout):\n"
        f"    open({str(heard)!r}, 'a').write(f'installed {{module}}/{{version}} {{kver}} {{arch}}\\n')\n\n"
        "@hookimpl\n"
        "def dkms_module_removed(module, version, kver, arch, layout):\n"
        f"    open({str(heard)!r}, 'a').write(f'removed {{module}}/{{version}} {{kver}} {{arch}}\\n')\n")
    info = site / "listening_dkms-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: listening-dkms\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dkms_hooks]\nlistening = listening_dkms\n")
    env = {"PYTHONPATH": ":".join(filter(None, [str(site), sandbox.env.get("PYTHONPATH", ""),
                                                  os.environ.get("PYTHONPATH", "")]))}
    write_module(sandbox.source_tree, "heardof")
    assert sandbox.event("apt", "trigger", env=env).returncode == 0
    assert sandbox.event("kernel-install", "remove", k, "/boot/entry", env=env).returncode == 0
    assert heard.read_text() == f"installed heardof/1.0 {k} x86_64\nremoved heardof/1.0 {k} x86_64\n"
