"""Hostile and broken input: a clear error, a non-zero exit, nothing written outside the
trees and nothing lost inside them."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel
from hostile import assert_refused, snapshot
from modsrc import write_module

MODULE = "dkms_hooks_example/1.0"


@pytest.fixture
def populated(sandbox: Sandbox) -> Sandbox:
    """A sandbox with a module already added, so "nothing lost" has something to lose."""
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", MODULE, check=True)
    return sandbox


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple[
        tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info, data if kind == tarfile.REGTYPE else None


def _archive(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


CONF = (EXAMPLE / "dkms.conf").read_bytes()
#: the same module under another name (the populated sandbox has the example added)
OTHER = CONF.replace(b'PACKAGE_NAME="dkms_hooks_example"', b'PACKAGE_NAME="other"')
BUILT = "dkms_main_tree/6.1.0-1-amd64/x86_64/module"

HOSTILE_ARCHIVES = {
    "hardlink-up": [_entry("pkg/dkms.conf", data=CONF),
                    _entry("pkg/h", tarfile.LNKTYPE, link="../../outside")],
    "hardlink-abs": [_entry("pkg/dkms.conf", data=CONF),
                     _entry("pkg/h", tarfile.LNKTYPE, link="/etc/passwd")],
    "symlink-up": [_entry("pkg/dkms.conf", data=CONF), _entry("pkg/s", tarfile.SYMTYPE, link="../../x")],
    "device": [_entry("pkg/dkms.conf", data=CONF), _entry("pkg/null", tarfile.CHRTYPE)],
    "fifo": [_entry("pkg/dkms.conf", data=CONF), _entry("pkg/fifo", tarfile.FIFOTYPE)],
    "dotdot-late": [_entry("pkg/dkms.conf", data=CONF), _entry("pkg/a", data=b"a"),
                    _entry("pkg/../../up", data=b"x")],
    "odd-kernel-dir": [_entry("dkms_source_tree/dkms.conf", data=OTHER),
                       _entry("dkms_main_tree/6.1 x\n/x86_64/module/dkms_hooks_example.ko", data=b"\x7fELF")],
    "link-among-binaries": [_entry("dkms_source_tree/dkms.conf", data=OTHER),
                            _entry(f"{BUILT}/dkms_hooks_example.ko", tarfile.SYMTYPE,
                                   link="../../../../dkms_source_tree/dkms.conf")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ARCHIVES))
def test_ldtarball_refuses_hostile_members(populated: Sandbox, tmp_path: Path, case: str) -> None:
    archive = _archive(tmp_path / f"{case}.tar.gz", HOSTILE_ARCHIVES[case])
    before = snapshot(tmp_path)
    res = populated.dkms("ldtarball", str(archive))
    assert_refused(res, code=3, says=f"Error! Tarball {archive} cannot be unpacked safely: ")
    assert len([line for line in res.stderr.splitlines() if line]) == 1
    assert snapshot(tmp_path) == before


def test_ldtarball_refuses_hostile_names_in_its_dkms_conf(populated: Sandbox, tmp_path: Path) -> None:
    conf = CONF.replace(b'PACKAGE_NAME="dkms_hooks_example"', b'PACKAGE_NAME="../../../escaped"')
    assert conf != CONF
    archive = _archive(tmp_path / "evil-name.tar.gz", [_entry("dkms_source_tree/dkms.conf", data=conf),
                                                       _entry(f"{BUILT}/x.ko", data=b"x")])
    before = snapshot(tmp_path)
    res = populated.dkms("ldtarball", str(archive))
    assert_refused(res, code=8,
                   says="dkms.conf: Error! 'PACKAGE_NAME' directive '../../../escaped' contains '/'.")
    assert snapshot(tmp_path) == before


def test_ldtarball_huge_member_is_refused_without_unpacking(populated: Sandbox, tmp_path: Path) -> None:
    """A 5 GiB sparse member: refused from its header, before a byte of it is written."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "dkms.conf").write_bytes(CONF)
    with open(pkg / "huge", "wb") as f:
        f.truncate(5 << 30)
    archive = tmp_path / "huge.tar.gz"
    subprocess.run(["tar", "-S", "-C", tmp_path, "-czf", archive, "pkg"], check=True)
    (pkg / "huge").unlink()
    assert archive.stat().st_size < 1 << 20
    before = snapshot(tmp_path)
    res = populated.dkms("ldtarball", str(archive))
    assert_refused(res, code=3, says="cannot be unpacked safely: it unpacks to more than 4 GiB.")
    assert snapshot(tmp_path) == before


def test_ldtarball_zstd_is_streamed_and_checked(populated: Sandbox, tmp_path: Path) -> None:
    plain = _archive(tmp_path / "evil.tar.gz", HOSTILE_ARCHIVES["dotdot-late"])
    tar = tmp_path / "evil.tar"
    tar.write_bytes(subprocess.run(["gzip", "-dc", plain], check=True, capture_output=True).stdout)
    subprocess.run(["zstd", "-q", "--rm", tar, "-o", tmp_path / "evil.tar.zst"], check=True)
    before = snapshot(tmp_path)
    res = populated.dkms("ldtarball", str(tmp_path / "evil.tar.zst"))
    assert_refused(res, code=3, says="member 'pkg/../../up' points outside the archive.")
    assert snapshot(tmp_path) == before


HOSTILE_CONFS = {
    "name-up": ('PACKAGE_NAME="../../x"', "'PACKAGE_NAME' directive '../../x' contains '/'."),
    "name-space": ('PACKAGE_NAME="a b"', "'PACKAGE_NAME' directive 'a b' contains whitespace or control"),
    # upstream's second, unquoted evaluation turns the newline into a blank
    "name-newline": ("PACKAGE_NAME=$'a\\nb'", "'PACKAGE_NAME' directive 'a b' contains whitespace or control"),
    "version-dotdot": ('PACKAGE_VERSION=".."', "'PACKAGE_VERSION' directive '..' is not a name."),
    "version-slash": ('PACKAGE_VERSION="1/../../.."', "'PACKAGE_VERSION' directive '1/../../..' contains '/'."),
    "built-name": ('BUILT_MODULE_NAME[0]="../../../x"', "'BUILT_MODULE_NAME' directive '../../../x' contains"),
    "dest-name": ('DEST_MODULE_NAME[0]="../../etc/x"', "'DEST_MODULE_NAME' directive '../../etc/x' contains"),
    "built-location": ('BUILT_MODULE_LOCATION[0]="../../../../etc/"',
                       "'BUILT_MODULE_LOCATION' directive '../../../../etc/' points outside its tree in record #0."),
    "dest-location": ('DEST_MODULE_LOCATION[0]="/kernel/../../../etc"',
                      "'DEST_MODULE_LOCATION' directive '/kernel/../../../etc' points outside its tree in record #0."),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFS))
def test_dkms_conf_values_that_escape_are_refused(populated: Sandbox, tmp_path: Path, case: str) -> None:
    line, message = HOSTILE_CONFS[case]
    conf = ('PACKAGE_NAME="hostile"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="hostile"\n'
            'DEST_MODULE_LOCATION[0]="/updates"\n' + line + "\n")
    src = write_module(tmp_path / "src", "hostile", conf=conf)
    before = snapshot(tmp_path)
    res = populated.dkms("add", str(src))
    assert_refused(res, code=8, says=f"dkms.conf: Error! {message}")
    assert "Error! Bad conf file." in res.stderr
    assert snapshot(tmp_path) == before
    res = populated.dkms("conf", str(src))
    assert_refused(res, code=8, says=message)


def test_dkms_conf_location_that_stays_inside_is_fine(sandbox: Sandbox, tmp_path: Path) -> None:
    # a real-world file uses this
    src = write_module(tmp_path, "inside", conf='PACKAGE_NAME="inside"\nPACKAGE_VERSION="1.0"\n'
                                                'DEST_MODULE_LOCATION[0]="/kernel/../updates/"\n')
    sandbox.dkms("add", str(src), check=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remove", "-m", "..", "-v", "x", "--all"], "Invalid module name: '..' is not a name."),
        (["remove", "-m", "m", "-v", "..", "--all"], "Invalid module version: '..' is not a name."),
        (["unbuild", "-m", "m", "-v", "a/../../b", "-k", "6.1"], "Invalid module version: 'a/../../b' contains"),
        (["install", MODULE, "-k", "../../../tmp"], "Invalid kernel version: '..' is not a name."),
        # option values are read as upstream reads them (the first line), so no newline gets through
        (["build", MODULE, "-k", "6.1\tx"], "Invalid kernel version: '6.1\\tx' contains whitespace or control"),
        (["build", MODULE, "-k", "..", "-a", "x86_64"], "Invalid kernel version: '..' is not a name."),
        (["build", MODULE, "-k", "6.1", "-a", "x 86"], "Invalid arch: 'x 86' contains whitespace"),
    ],
)
def test_command_line_names_that_escape_are_refused(populated: Sandbox, tmp_path: Path, args: list[str],
                                                    message: str) -> None:
    before = snapshot(tmp_path)
    res = populated.dkms(*args)
    assert_refused(res, code=1, says=f"Error! {message}")
    assert snapshot(tmp_path) == before


def test_framework_files_cannot_override_internals(sandbox: Sandbox, tmp_path: Path) -> None:
    """framework.conf is bash, as upstream's; only upstream's variables come back, and a
    value crafted to redirect or silence the reader fails."""
    outside = tmp_path / "outside"
    (sandbox.etc / "framework.conf.d/evil.conf").write_text(
        "die() { :; }\nread_conf() { :; }\ninvoke_command() { :; }\n"
        "module=evil\nkernelver=evil\nPACKAGE_NAME=evil\n__out=" + str(outside) + "\n"
        f"verbose='\"; __out={outside}; __record() {{ :; }}; \"'\n"
    )
    (sandbox.etc / "dkms-hooks.toml").write_text(f'dkms_tree = "{outside}"\nsource_tree = "/"\n')
    sandbox.add_source(EXAMPLE)
    res = sandbox.dkms("add", MODULE)
    assert res.returncode == 0, res.output
    assert (sandbox.dkms_tree / MODULE / "source").is_symlink()
    assert sandbox.dkms("status").stdout == "dkms_hooks_example/1.0: added\n"
    assert not outside.exists()


def test_dkms_conf_cannot_redirect_the_reader(sandbox: Sandbox, tmp_path: Path) -> None:
    """A value that breaks out of upstream's second evaluation keeps what came before the
    break (PACKAGE_NAME="x"); the rest fails on the reader's read-only state."""
    outside = tmp_path / "outside"
    conf = (f'PACKAGE_NAME="x\\"; __out={outside}; __record() {{ :; }}; \\""\n'
            'PACKAGE_VERSION="1.0"\nDEST_MODULE_LOCATION[0]="/updates"\n')
    src = write_module(tmp_path / "src", "x", conf=conf)
    res = sandbox.dkms("add", str(src))
    assert res.returncode == 0, res.output
    assert "__out: readonly variable" in res.stderr
    assert sandbox.dkms("status").stdout == "x/1.0: added\n"
    assert not outside.exists()


@needs_kernel
@pytest.mark.parametrize(
    ("patch", "code", "message"),
    [
        ("../../../../../etc/passwd", 5, "Patch ../../../../../etc/passwd as specified in dkms.conf contains '..' "
                                         "path component."),
        ("..", 5, "Patch .. as specified in dkms.conf contains '..' path component."),
        ("/etc/passwd", 5, "Patch /etc/passwd as specified in dkms.conf cannot be"),
    ],
)
def test_patch_outside_patches_dir(sandbox: Sandbox, tmp_path: Path, patch: str, code: int,
                                   message: str) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    conf = (f'PACKAGE_NAME="p"\nPACKAGE_VERSION="1.0"\nDEST_MODULE_LOCATION[0]="/updates"\n'
            f'PATCH[0]="{patch}"\n')
    src = write_module(sandbox.source_tree, "p", conf=conf)
    (src / "patches").mkdir()
    sandbox.dkms("add", "p/1.0", check=True)
    before = {k: v for k, v in snapshot(sandbox.root).items() if not k.startswith("var/lib/dkms")}
    res = sandbox.dkms("build", "p/1.0", "-k", k)
    assert_refused(res, code=code, says=message)
    assert {k: v for k, v in snapshot(sandbox.root).items() if not k.startswith("var/lib/dkms")} == before
    assert sandbox.dkms("status").stdout == "p/1.0: added\n"


@pytest.mark.kernel
@pytest.mark.skipif(len(KERNELS) < 2, reason="needs headers for two kernels")
def test_module_built_for_another_kernel_is_not_installed(sandbox: Sandbox, tmp_path: Path) -> None:
    k_built, k_target = KERNELS[0], KERNELS[1]
    for k in (k_built, k_target):
        sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("build", MODULE, "-k", k_built, check=True)
    # the module for one kernel, placed where dkms keeps the build for the other
    built = sandbox.dkms_tree / MODULE
    shutil.copytree(built / k_built, built / k_target, symlinks=True)
    status = sandbox.dkms("status", "-k", k_target).stdout
    assert status == f"dkms_hooks_example/1.0, {k_target}, x86_64: built\n"
    before = snapshot(tmp_path)
    res = sandbox.dkms("install", MODULE, "-k", k_target)
    ko = next((built / k_target / "x86_64/module").glob("dkms_hooks_example.ko*"))
    assert_refused(res, code=6, says=f"Error! {ko} was built for kernel {k_built}, not {k_target} (vermagic); "
                                     "not installing it.")
    assert snapshot(tmp_path) == before
    # the right kernel installs as before
    sandbox.dkms("install", MODULE, "-k", k_built, check=True)


@pytest.mark.kernel
@needs_kernel
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a private tmpfs")
def test_disk_full_while_installing(sandbox: Sandbox, tmp_path: Path) -> None:
    """The kernel's module directory on a full tmpfs (in a private mount namespace): the
    install fails cleanly, the module it would replace stays, no partial file is left,
    and the same install succeeds once there is room."""
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("build", MODULE, "-k", k, check=True)
    updates = sandbox.install_tree / k / "updates"
    updates.mkdir()
    dkms = shlex.join(["python3", "-m", "dkms_hooks", "--dkmstree", str(sandbox.dkms_tree),
                       "--sourcetree", str(sandbox.source_tree), "--installtree", str(sandbox.install_tree)])
    script = f"""
set -u
mount -t tmpfs -o size=256k tmpfs {updates}
mkdir {updates}/dkms
printf ORIGINAL > {updates}/dkms/dkms_hooks_example.ko
dd if=/dev/zero of={updates}/filler bs=4k 2>/dev/null
{dkms} install {MODULE} -k {k} >/dev/null 2>{tmp_path}/err1; echo "rc1=$?"
echo "files1=$(ls -A {updates}/dkms | tr '\\n' ' ')"
echo "orig1=$(cat {updates}/dkms/dkms_hooks_example.ko)"
echo "status1=$({dkms} status)"
rm {updates}/filler
{dkms} install {MODULE} -k {k} >/dev/null 2>{tmp_path}/err2; echo "rc2=$?"
echo "files2=$(ls -A {updates}/dkms | tr '\\n' ' ')"
echo "status2=$({dkms} status)"
"""
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          env={**sandbox.env, "PATH": f"{Path(sys.executable).parent}:{sandbox.env['PATH']}"},
                          capture_output=True, text=True, timeout=300)
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    err1 = (tmp_path / "err1").read_text()
    built = sandbox.dkms_tree / MODULE / k / "x86_64/module"
    ko = next(built.glob("dkms_hooks_example.ko*"))
    assert out["rc1"] == "6", (proc.stdout, proc.stderr, err1)
    assert err1 == f"\nError! Copying '{ko}' failed\n"
    assert out["files1"] == "dkms_hooks_example.ko "  # the original, and nothing half-written
    assert out["orig1"] == "ORIGINAL"
    assert out["status1"] == f"dkms_hooks_example/1.0, {k}, x86_64: built"
    assert out["rc2"] == "0", (tmp_path / "err2").read_text()
    assert out["files2"] == f"{ko.name} "
    assert out["status2"] == f"dkms_hooks_example/1.0, {k}, x86_64: installed (Original modules exist)"


@needs_kernel
def test_build_user_that_does_not_exist(populated: Sandbox, tmp_path: Path) -> None:
    k = KERNELS[0]
    populated.add_kernel(k)
    toml = populated.etc / "dkms-hooks.toml"
    toml.write_text('build_user = "no-such-user-dkms-hooks"\n')
    before = snapshot(tmp_path)
    res = populated.dkms("build", MODULE, "-k", k)
    assert_refused(res, code=1, says=f"Error! The build user 'no-such-user-dkms-hooks' (build_user in {toml}) "
                                     "does not exist.")
    assert snapshot(tmp_path) == before
    toml.write_text("build_user = 1000\n")
    res = populated.dkms("build", MODULE, "-k", k)
    assert_refused(res, code=1, says=f"{toml}: build_user must be a user name")
