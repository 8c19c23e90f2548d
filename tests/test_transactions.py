"""Whole transactions through the engine, on real headers: one host call that removes a
kernel and a module, an upgrade seen by a file trigger, versions with dashes, sources that
are not ours, bad targets, and a root without the kernel's compressor."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import write_module

pytestmark = [pytest.mark.kernel, needs_kernel]


def installed(sandbox: Sandbox, name: str) -> dict[str, list[str]]:
    """Each kernel's installed files of module ``name``, relative to its tree."""
    out: dict[str, list[str]] = {}
    for k in sorted(os.listdir(sandbox.install_tree)):
        found = sorted(str(p.relative_to(sandbox.install_tree / k))
                       for p in (sandbox.install_tree / k).rglob(f"{name}.ko*"))
        if found:
            out[k] = found
    return out


def in_modules_dep(sandbox: Sandbox, kver: str, name: str) -> bool:
    dep = sandbox.install_tree / kver / "modules.dep"
    return dep.is_file() and f"/{name}.ko" in dep.read_text()


def test_pacman_removes_a_module_whose_version_has_dashes(sandbox: Sandbox) -> None:
    """The Arch wiki's own example: can-dkms 4.1.6-200 in /usr/src/can-dkms-4.1.6-200."""
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "can-dkms", "4.1.6-200")
    res = sandbox.event("pacman", "install", stdin="usr/src/can-dkms-4.1.6-200/dkms.conf\n")
    assert res.returncode == 0, res.output
    assert f"  installed  can-dkms/4.1.6-200, {k}\n" in res.stdout
    assert sandbox.dkms("status").stdout == f"can-dkms/4.1.6-200, {k}, x86_64: installed\n"
    assert in_modules_dep(sandbox, k, "can-dkms")

    res = sandbox.event("pacman", "remove", stdin="usr/src/can-dkms-4.1.6-200/dkms.conf\n")
    assert res.returncode == 0, res.output
    assert "  removed    can-dkms/4.1.6-200\n" in res.stdout
    assert sandbox.dkms("status").stdout == ""
    assert installed(sandbox, "can-dkms") == {}
    assert not in_modules_dep(sandbox, k, "can-dkms")
    assert not (sandbox.dkms_tree / "can-dkms").exists()


@pytest.mark.skipif(len(KERNELS) < 2, reason="needs headers for two kernels")
def test_one_pacman_removal_of_a_kernel_and_a_module(sandbox: Sandbox) -> None:
    old, new = KERNELS[0], KERNELS[-1]
    for k in (old, new):
        sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "r8168", "8.053.00-NAPI")
    write_module(sandbox.source_tree, "stays")
    res = sandbox.event("pacman", "install", stdin="usr/src/r8168-8.053.00-NAPI/dkms.conf\nusr/src/stays-1.0/dkms.conf\n")
    assert res.returncode == 0, res.output
    assert set(installed(sandbox, "r8168")) == {old, new}

    res = sandbox.event("pacman", "remove", stdin=f"usr/lib/modules/{old}/build/include/\n"
                        "usr/src/r8168-8.053.00-NAPI/dkms.conf\n")
    assert res.returncode == 0, res.output
    assert f"  removed    r8168/8.053.00-NAPI, {old}\n" in res.stdout
    assert f"  removed    stays/1.0, {old}\n" in res.stdout
    assert "  removed    r8168/8.053.00-NAPI\n" in res.stdout
    # the module went from the kernel that stays too, and from the tree
    assert installed(sandbox, "r8168") == {}
    assert not in_modules_dep(sandbox, new, "r8168")
    assert in_modules_dep(sandbox, new, "stays")
    assert sandbox.dkms("status").stdout == f"stays/1.0, {new}, x86_64: installed\n"


def test_the_dpkg_trigger_sees_an_upgrade_as_a_removal_and_an_addition(sandbox: Sandbox) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "upg", "1.0-1")
    res = sandbox.event("apt", "trigger")
    assert f"  installed  upg/1.0-1, {k}\n" in res.stdout, res.output
    # dpkg unpacked 2.0-1 over 1.0-1: the old directory went, the new one came, one trigger
    os.rename(sandbox.source_tree / "upg-1.0-1", sandbox.source_tree / "upg-2.0-1")
    conf = sandbox.source_tree / "upg-2.0-1/dkms.conf"
    conf.write_text(conf.read_text().replace('"1.0-1"', '"2.0-1"'))
    res = sandbox.event("apt", "trigger")
    assert res.returncode == 0, res.output
    assert "  removed    upg/1.0-1\n" in res.stdout and f"  installed  upg/2.0-1, {k}\n" in res.stdout
    assert sandbox.dkms("status").stdout == f"upg/2.0-1, {k}, x86_64: installed\n"
    assert in_modules_dep(sandbox, k, "upg")
    # the same version reinstalled with another dkms.conf is built again; an unchanged one is not
    res = sandbox.event("apt", "trigger")
    assert res.returncode == 0 and res.stdout == "\ndkms-hooks summary:\n  nothing to do\n", res.output
    with open(conf, "a") as f:
        f.write("# reinstalled\n")
    res = sandbox.event("apt", "trigger")
    assert "  removed    upg/2.0-1\n" in res.stdout and f"  installed  upg/2.0-1, {k}\n" in res.stdout, res.output


def test_a_source_no_registration_comes_from_is_not_ours(sandbox: Sandbox, tmp_path: Path) -> None:
    """A module added from elsewhere keeps its registration when a directory of the same
    name goes from /usr/src; the trees stay as they were."""
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "mine", "1.0")
    sandbox.dkms("install", "mine/1.0", "-k", k, check=True)
    # the registration's source link points outside the source tree
    elsewhere = tmp_path / "opt/mine-1.0"
    os.rename(sandbox.source_tree / "mine-1.0", elsewhere.parent.mkdir(parents=True) or elsewhere)
    link = sandbox.dkms_tree / "mine/1.0/source"
    link.unlink()
    link.symlink_to(elsewhere)
    write_module(sandbox.source_tree, "mine", "1.0")
    before = sandbox.snapshot()
    res = sandbox.event("pacman", "remove", stdin="usr/src/mine-1.0/dkms.conf\n")
    assert res.returncode == 0, res.output
    assert (f"  note: {sandbox.source_tree}/mine-1.0: no registered module comes from there, nothing removed\n"
            in res.stdout)
    assert sandbox.snapshot() == before


def test_bad_targets_are_refused_and_change_nothing(sandbox: Sandbox) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "safe")
    sandbox.dkms("install", "safe/1.0", "-k", k, check=True)
    before = sandbox.snapshot()
    res = sandbox.event("pacman", "remove", stdin="usr/src/../../etc/dkms.conf\nusr/lib/modules/../build/include/\n")
    assert res.returncode == 2
    assert res.stderr.count("Error! pacman target") == 2, res.stderr
    res = sandbox.event("rpm", "filetrigger-un", stdin="/etc/passwd\n")
    assert (res.returncode, res.stderr) == (2, ("\nError! rpm file trigger path '/etc/passwd' is not under "
                                                f"{sandbox.source_tree}/\n"))
    res = sandbox.event("apt", "source-remove", "..", "1.0")
    assert res.returncode == 2 and "needs a module NAME and VERSION" in res.stderr
    assert sandbox.snapshot() == before


def test_without_the_kernels_compressor_modules_go_in_uncompressed(sandbox: Sandbox, tmp_path: Path) -> None:
    """A root without xz (or zstd) installs the module uncompressed, as upstream does."""
    k = next((k for k in KERNELS if "CONFIG_MODULE_COMPRESS_XZ=y" in Path(f"/lib/modules/{k}/build/.config")
              .read_text(errors="replace")), None)
    if k is None:
        pytest.skip("no kernel here compresses its modules with xz")
    sandbox.add_kernel(k)
    bindir = tmp_path / "no-xz"
    bindir.mkdir()
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name not in ("xz", "unxz", "xzcat") and not (bindir / name).exists():
                    (bindir / name).symlink_to(os.path.join(d, name))
    write_module(sandbox.source_tree, "plain")
    res = sandbox.event("apt", "trigger", env={"PATH": str(bindir)})
    assert res.returncode == 0, res.output
    assert f"  installed  plain/1.0, {k}\n" in res.stdout
    assert "xz not found: plain.ko is installed uncompressed." in res.stderr
    assert installed(sandbox, "plain") == {k: ["updates/dkms/plain.ko"]}
    ko = sandbox.install_tree / k / "updates/dkms/plain.ko"
    vermagic = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], capture_output=True, text=True,
                              check=False).stdout
    assert vermagic.startswith(k + " ")
    assert not list((sandbox.dkms_tree / ".dkms-hooks").glob("journal/*")), "no record left for recovery"
    assert sandbox.dkms("status").stdout == f"plain/1.0, {k}, x86_64: installed\n"
