"""The shell completions, run by the real shells against a sandbox root: bash calls _dkms
with COMP_WORDS/COMP_CWORD as bash would set them; zsh completes a typed line through its
real completion system in a pseudo-terminal (tests/zsh_complete.zsh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

BASH_FILE = REPO / "completions" / "dkms.bash"
ZSH_DIR = REPO / "completions"
ZSH_DRIVER = Path(__file__).with_name("zsh_complete.zsh")

VERBS = [
    "add",
    "build",
    "install",
    "uninstall",
    "unbuild",
    "remove",
    "status",
    "autoinstall",
    "match",
    "mktarball",
    "ldtarball",
    "generate_mok",
    "kernel_preinst",
    "kernel_postinst",
    "kernel_prerm",
    "conf",
    "plan",
    "cache",
    "mok",
    "event",
]


def make_root(root: Path, dkms_tree: str = "var/lib/dkms") -> Path:
    src = root / "usr/src"
    for name, conf in (
        ("foo-bar-1.2", 'PACKAGE_NAME="foo-bar"\n'),
        ("simple-2.0", "PACKAGE_NAME=simple\n"),
        ("odd-name-3.0", 'PACKAGE_NAME="$name"\n'),
    ):
        (src / name).mkdir(parents=True)
        (src / name / "dkms.conf").write_text(conf)
    (src / "linux-headers-6.1").mkdir()  # no dkms.conf: not a module
    tree = root / dkms_tree
    (tree / "foo-bar/1.2/6.1.0-test/x86_64").mkdir(parents=True)
    (tree / "foo-bar/1.2/source").symlink_to(src / "foo-bar-1.2")
    (tree / "foo-bar/kernel-6.1.0-test-x86_64").symlink_to("1.2/6.1.0-test/x86_64")
    (tree / "foo-bar/original_module/6.1.0-test").mkdir(parents=True)
    (tree / "simple/2.0").mkdir(parents=True)
    (tree / "simple/2.0/source").symlink_to(src / "gone-2.0")  # broken, still added
    (tree / ".dkms-hooks/conf").mkdir(parents=True)
    for k in ("6.1.0-test", "6.12.5-test"):
        (root / "lib/modules" / k).mkdir(parents=True)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = make_root(tmp_path / "root")
    (tmp_path / "cwd/subdir").mkdir(parents=True)
    (tmp_path / "cwd/archive.tar.gz").write_text("")
    return r


def bash_complete(root: Path, *words: str) -> list[str]:
    script = (f'source {BASH_FILE}; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _dkms; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    res = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script, "bash", *words],
        env={**os.environ, "DKMS_HOOKS_SYSROOT": os.fspath(root)},
        cwd=root.parent / "cwd",
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in res.stdout.splitlines() if line]


def zsh_complete(root: Path, line: str) -> list[str]:
    res = subprocess.run(
        ["zsh", "-f", os.fspath(ZSH_DRIVER), os.fspath(ZSH_DIR), line],
        env={**os.environ, "DKMS_HOOKS_SYSROOT": os.fspath(root)},
        cwd=root.parent / "cwd",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return list(dict.fromkeys(res.stdout.splitlines()))  # zsh's directory completion adds twice


def test_bash_syntax() -> None:
    subprocess.run(["bash", "-n", os.fspath(BASH_FILE)], check=True)


def test_bash_verbs_and_options(root: Path) -> None:
    assert bash_complete(root, "dkms", "") == VERBS
    assert bash_complete(root, "dkms", "st") == ["status"]
    status = bash_complete(root, "dkms", "status", "--")
    assert "--json" in status and "--dkmstree" in status and "--force" not in status
    assert "--build" in bash_complete(root, "dkms", "plan", "--b")
    assert bash_complete(root, "dkms", "conf", "--r") == ["--raw"]
    assert bash_complete(root, "dkms", "cache", "") == ["status", "prune", "clear"]
    assert bash_complete(root, "dkms", "cache", "--j") == ["--json"]
    assert bash_complete(root, "dkms", "mok", "") == ["status", "enroll"]
    assert sorted(bash_complete(root, "dkms", "--ver")) == ["--verbose", "--version"]


def test_bash_modules_and_versions(root: Path) -> None:
    # add: the source tree (a dashed name split where PACKAGE_NAME says), and directories
    assert bash_complete(root, "dkms", "add", "") == ["foo-bar/1.2", "odd-name/3.0", "simple/2.0", "subdir"]
    assert bash_complete(root, "dkms", "add", "-m", "") == ["foo-bar", "odd-name", "simple"]
    assert bash_complete(root, "dkms", "add", "-m", "foo-bar", "-v", "") == ["1.2"]
    # other verbs: what is added to the dkms tree (not its state dir, links or original_module)
    assert bash_complete(root, "dkms", "build", "") == ["foo-bar/1.2", "simple/2.0"]
    assert bash_complete(root, "dkms", "remove", "f") == ["foo-bar/1.2"]
    assert bash_complete(root, "dkms", "uninstall", "-m", "") == ["foo-bar", "simple"]
    assert bash_complete(root, "dkms", "status", "-m", "simple", "-v", "") == ["2.0"]
    assert bash_complete(root, "dkms", "ldtarball", "arch") == ["archive.tar.gz"]


def test_bash_kernels_and_events(root: Path) -> None:
    assert bash_complete(root, "dkms", "build", "foo-bar/1.2", "-k", "") == ["6.1.0-test", "6.12.5-test"]
    assert bash_complete(root, "dkms", "autoinstall", "--kernelver", "6.12") == ["6.12.5-test"]
    assert bash_complete(root, "dkms", "event", "") == ["kernel-install", "apt", "pacman", "rpm", "gentoo"]
    assert bash_complete(root, "dkms", "event", "pacman", "") == ["install", "remove"]
    assert bash_complete(root, "dkms", "event", "apt", "kernel-postinst", "") == ["6.1.0-test", "6.12.5-test"]


def test_bash_trees_from_the_command_line(root: Path, tmp_path: Path) -> None:
    other = make_root(tmp_path / "other", dkms_tree="dkms")
    shutil.rmtree(other / "dkms/simple")
    dt, st, it = other / "dkms", other / "usr/src", other / "lib/modules"
    shutil.rmtree(it / "6.1.0-test")
    assert bash_complete(root, "dkms", "build", "--dkmstree", os.fspath(dt), "") == ["foo-bar/1.2"]
    # bash splits --dkmstree=PATH at '=' into three words
    assert bash_complete(root, "dkms", "build", "--dkmstree", "=", os.fspath(dt), "-m", "") == ["foo-bar"]
    assert bash_complete(root, "dkms", "build", "--installtree", os.fspath(it), "-k", "") == ["6.12.5-test"]
    (st / "simple-2.0/dkms.conf").unlink()
    assert bash_complete(root, "dkms", "--sourcetree", os.fspath(st), "add", "-m", "") == [
        "foo-bar",
        "odd-name",
    ]
    # completing the value of --opt=: only the part after '=' is replaced
    assert bash_complete(root, "dkms", "build", "--dkmstree", "=", "sub") == ["subdir"]


needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")


@needs_zsh
def test_zsh_syntax() -> None:
    subprocess.run(["zsh", "-n", os.fspath(ZSH_DIR / "_dkms")], check=True)


@needs_zsh
def test_zsh_completes_through_compinit(root: Path, tmp_path: Path) -> None:
    assert zsh_complete(root, "dkms ") == VERBS
    assert zsh_complete(root, "dkms add ") == ["foo-bar/1.2", "odd-name/3.0", "simple/2.0", "subdir"]
    assert zsh_complete(root, "dkms build ") == ["foo-bar/1.2", "simple/2.0"]
    assert zsh_complete(root, "dkms remove -m foo-bar -v ") == ["1.2"]
    assert zsh_complete(root, "dkms install foo-bar/1.2 -k ") == ["6.1.0-test", "6.12.5-test"]
    assert zsh_complete(root, "dkms event rpm post") == ["post", "posttrans"]
    assert zsh_complete(root, "dkms cache ") == ["status", "prune", "clear"]
    assert zsh_complete(root, "dkms mok ") == ["status", "enroll"]
    assert "--json" in zsh_complete(root, "dkms status --")
    other = make_root(tmp_path / "other", dkms_tree="dkms")
    shutil.rmtree(other / "dkms/foo-bar")
    assert zsh_complete(root, f"dkms build --dkmstree={other / 'dkms'} ") == ["simple/2.0"]


def test_trees_from_framework_conf(root: Path, tmp_path: Path) -> None:
    other = make_root(tmp_path / "other", dkms_tree="dkms")
    shutil.rmtree(other / "dkms/foo-bar")
    (root / "etc/dkms/framework.conf.d").mkdir(parents=True)
    (root / "etc/dkms/framework.conf").write_text("# dkms_tree=/nowhere\n")
    (root / "etc/dkms/framework.conf.d/trees.conf").write_text(f'dkms_tree="{other / "dkms"}"\n')
    assert bash_complete(root, "dkms", "build", "") == ["simple/2.0"]
    # the command line still wins
    dt = os.fspath(root / "var/lib/dkms")
    assert bash_complete(root, "dkms", "--dkmstree", dt, "build", "") == ["foo-bar/1.2", "simple/2.0"]
    if shutil.which("zsh"):
        assert zsh_complete(root, "dkms build ") == ["simple/2.0"]
