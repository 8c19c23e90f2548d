"""dkms.conf reading: the real-world corpus through bash, and upstream's validation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import SHARED, SOURCE_PATH

from dkms_hooks.model import bashconf, dkmsconf
from dkms_hooks.model.kernel import KernelTarget

CORPUS = SHARED / "corpus" / "dkms-conf"
CORPUS_KERNEL = "6.1.0-56-amd64"


@pytest.fixture(scope="module")
def pinned_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """nproc, getconf, uname and lsb_release answering as on the machine the corpus was read on."""
    shims = tmp_path_factory.mktemp("shims")
    scripts = {
        "nproc": "echo 4",
        "getconf": '[ "$1" = _NPROCESSORS_ONLN ] && { echo 4; exit 0; }; exec /usr/bin/getconf "$@"',
        "uname": f'case "$1" in -r) echo {CORPUS_KERNEL};; -m) echo x86_64;; *) exec /usr/bin/uname "$@";; esac',
        "lsb_release": "echo Debian",
    }
    for name, body in scripts.items():
        p = shims / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return f"{shims}:/usr/bin:/bin"


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.conf")) if CORPUS.is_dir() else []


@pytest.mark.kernel
@pytest.mark.skipif(not corpus_files(), reason="corpus not found beside the checkout")
@pytest.mark.skipif(not Path(f"/lib/modules/{CORPUS_KERNEL}/build").is_dir(), reason="corpus kernel headers missing")
@pytest.mark.parametrize("conf", corpus_files(), ids=lambda p: p.name)
def test_raw_reproduces_corpus(conf: Path, pinned_path: str, tmp_path: Path) -> None:
    """`dkms conf --raw` prints exactly what upstream read from each real dkms.conf."""
    import subprocess
    import sys

    sysroot = tmp_path / "root"
    (sysroot / "etc").mkdir(parents=True)
    (sysroot / "etc/os-release").write_text("ID=debian\n")
    env = {"PATH": pinned_path, "LANG": "C", **SOURCE_PATH, "DKMS_HOOKS_SYSROOT": str(sysroot)}
    proc = subprocess.run(
        # the sysroot keeps the host's /etc/dkms out; the trees are upstream's defaults (only read)
        [sys.executable, "-m", "dkms_hooks", "--dkmstree=/var/lib/dkms", "--sourcetree=/usr/src",
         "--installtree=/lib/modules", "conf", "--raw", "-k", CORPUS_KERNEL, "-a", "x86_64", str(conf)],
        env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    expected = conf.with_name(conf.name + ".expected").read_text()
    assert proc.stdout == expected


def _resolve(tmp_path: Path, text: str, *, kver: str = "6.1.0-1-amd64", strict: bool = False,
             distro: str = "debian") -> dkmsconf.ModuleConf:
    conf = tmp_path / "dkms.conf"
    conf.write_text(text)
    kernel = KernelTarget(kver, "x86_64", tmp_path / "nokernel", tmp_path / "nokernel/.config")
    result = dkmsconf.read_values([conf], scope={"kernelver": kver, "arch": "x86_64"})
    return dkmsconf.resolve(result, path=conf, kernel=kernel, running_distribution=distro,
                            default_build_dir=tmp_path / "build", deprecation_warnings=strict)


def test_defaults_single_module(tmp_path: Path) -> None:
    c = _resolve(tmp_path, 'PACKAGE_NAME=foo\nPACKAGE_VERSION=1.2\nDEST_MODULE_LOCATION[0]="/kernel/extra"\n')
    assert c.ok
    assert [(m.built_name, m.dest_name, m.dest_location, m.strip) for m in c.modules] == [
        ("foo", "foo", "/updates/dkms", True)
    ]
    assert c.make_command == f"make -C {tmp_path}/nokernel M={tmp_path}/build"


def test_distro_locations(tmp_path: Path) -> None:
    text = 'PACKAGE_NAME=foo\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION="/kernel/drivers"\n'
    assert _resolve(tmp_path, text, distro="fedora").modules[0].dest_location == "/extra"
    assert _resolve(tmp_path, text, distro="opensuse-tumbleweed").modules[0].dest_location == "/updates"
    assert _resolve(tmp_path, text, distro="gentoo").modules[0].dest_location == "/kernel/drivers"


def test_validation_messages_in_upstream_order(tmp_path: Path) -> None:
    c = _resolve(tmp_path, "\n".join([
        "PACKAGE_NAME=x", "PACKAGE_VERSION=1",
        'DEST_MODULE_NAME[0]="a.ko"', 'DEST_MODULE_LOCATION[0]="/lib"',
        'BUILT_MODULE_NAME[1]="b.o"', 'DEST_MODULE_NAME[1]="b"', "AUTOINSTALL=maybe",
    ]))
    assert not c.ok
    assert [d.text for d in c.diagnostics] == [
        "dkms.conf: Error! No 'BUILT_MODULE_NAME' directive specified for record #0.",
        "dkms.conf: Error! 'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #0.",
        "dkms.conf: Error! Directive 'DEST_MODULE_LOCATION' does not begin with",
        "'/kernel', '/updates', or '/extra' in record #0.",
        "dkms.conf: Error! 'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #1.",
        "dkms.conf: Error! No 'DEST_MODULE_LOCATION' directive specified for record #1.",
        "dkms.conf: Error! Unsupported AUTOINSTALL value 'maybe'",
    ]


def test_make_match_patch_match_and_strip(tmp_path: Path) -> None:
    c = _resolve(tmp_path, "\n".join([
        "PACKAGE_NAME=x", "PACKAGE_VERSION=1",
        "BUILT_MODULE_NAME[0]=a", "BUILT_MODULE_NAME[1]=b", "BUILT_MODULE_LOCATION[1]=sub",
        "DEST_MODULE_LOCATION[0]=/extra", "DEST_MODULE_LOCATION[1]=/extra",
        "STRIP[0]=no",
        'MAKE[0]="make all"', 'MAKE[1]="make special"', "MAKE_MATCH[1]='^6\\.1'",
        "PATCH[0]=always.patch", "PATCH[1]=never.patch", "PATCH_MATCH[1]='^5\\.'",
    ]))
    assert c.ok
    assert c.make_command == "make special"
    assert c.patches == ["always.patch"]
    assert [m.built_path for m in c.modules] == ["a", "sub/b"]
    assert [m.strip for m in c.modules] == [False, False]


def test_second_expansion_pass(tmp_path: Path) -> None:
    c = _resolve(tmp_path, 'PACKAGE_NAME=x\nPACKAGE_VERSION=1\nMAKE="make   KVER=\\$kernelver\n  all"\n'
                           "DEST_MODULE_LOCATION=/extra\n")
    assert c.make_command == "make KVER=6.1.0-1-amd64 all"


def test_build_exclusive(tmp_path: Path) -> None:
    base = "PACKAGE_NAME=x\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION=/extra\n"
    assert _resolve(tmp_path, base + "BUILD_EXCLUSIVE_KERNEL='^5\\.'\n").build_exclude
    assert not _resolve(tmp_path, base + "BUILD_EXCLUSIVE_KERNEL='^6\\.'\n").build_exclude
    assert _resolve(tmp_path, base + "BUILD_EXCLUSIVE_KERNEL_MIN=6.2\n").build_exclude
    assert _resolve(tmp_path, base + "BUILD_EXCLUSIVE_KERNEL_MAX=6.0.99\n").build_exclude
    assert _resolve(tmp_path, base + "BUILD_EXCLUSIVE_ARCH=aarch64\n").build_exclude
    assert _resolve(tmp_path, base + "OBSOLETE_BY=6.0\n").build_exclude


def test_strict_duplicates_and_zero_modules(tmp_path: Path) -> None:
    c = _resolve(tmp_path, "PACKAGE_NAME=x\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME=(a a)\n"
                           "DEST_MODULE_LOCATION=(/extra /extra)\n")
    diags, ok = dkmsconf.strict_checks(c)
    assert not ok
    assert [d.text for d in diags] == [
        "dkms.conf: Error! Duplicate module 'a' in 'BUILT_MODULE_NAME[1]'.",
        "dkms.conf: Error! Duplicate module 'a' in 'DEST_MODULE_NAME[1]'.",
    ]
    empty = _resolve(tmp_path, "PACKAGE_NAME=x\nPACKAGE_VERSION=1\n")
    assert dkmsconf.strict_checks(empty) == (
        [dkmsconf.Diagnostic("err", "dkms.conf: Warning! Zero modules specified.")], True)


def test_deprecated_directives_warn_per_file(tmp_path: Path) -> None:
    c = _resolve(tmp_path, "PACKAGE_NAME=x\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME=x\nDEST_MODULE_LOCATION=/extra\n"
                           "REMAKE_INITRD=yes\nCLEAN=true\nMODULES_CONF[0]=x\n", strict=True)
    conf = tmp_path / "dkms.conf"
    assert [d.text for d in c.diagnostics] == [
        f"Deprecated feature: REMAKE_INITRD ({conf})",
        f"Deprecated feature: MODULES_CONF ({conf})",
    ]


def test_conf_cannot_touch_the_caller(tmp_path: Path) -> None:
    """A dkms.conf runs in a subshell from an empty directory: its functions, cd and
    stray globs change nothing outside, and only kept names come back."""
    (tmp_path / "victim").write_text("keep")
    r = bashconf.source_files(
        [_write(tmp_path, 'cd /; PACKAGE_NAME=*; OTHER=1; rm -f victim; BUILT_MODULE_NAME="a   b"\n')],
        dkmsconf.KEPT_NAMES, scope={},
    )
    assert (tmp_path / "victim").read_text() == "keep"
    assert r.values == {"PACKAGE_NAME": {0: "*"}, "BUILT_MODULE_NAME": {0: "a b"}}


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.conf"
    p.write_text(text)
    return p


def test_crlf_is_stripped(tmp_path: Path) -> None:
    r = bashconf.source_files([_write(tmp_path, 'PACKAGE_NAME="crlf"\r\nPACKAGE_VERSION=1\r\n')],
                              dkmsconf.KEPT_NAMES, scope={})
    assert r.scalar("PACKAGE_NAME") == "crlf"
    assert r.scalar("PACKAGE_VERSION") == "1"


def test_raw_lines_escape_and_sort() -> None:
    assert dkmsconf.raw_lines({"MAKE": {0: "a\tb\\c\nd"}, "AUTOINSTALL": {0: "yes"}}) == [
        "AUTOINSTALL[0]=yes",
        "MAKE[0]=a\\tb\\\\c\\nd",
    ]


