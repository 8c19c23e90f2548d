"""What a regular install ships: every subpackage and the bash reader (an editable install,
which the tests use, would hide a gap here); what `make install` lays out for each distro."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, checkout_files, needs_git

from dkms_hooks.model.paths import Layout
from dkms_hooks.system import compat


def test_every_subpackage_and_data_file_is_shipped() -> None:
    setuptools = __import__("setuptools")
    config = compat.load_toml((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]  # type: ignore[index]
    found = set(setuptools.find_packages(where=str(REPO), include=config["packages"]["find"]["include"]))
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dkms_hooks").rglob("__init__.py")}
    assert on_disk <= found
    data = config["package-data"]["dkms_hooks"]
    assert "model/*.bash" in data and (REPO / "dkms_hooks/model/readconf.bash").is_file()


def make_install(dest: Path, *args: str) -> None:
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            os.fspath(REPO),
            "install",
            f"DESTDIR={dest}",
            f"PYTHON={sys.executable}",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def shipped_python_files() -> set[str]:
    pkg = REPO / "dkms_hooks"
    return {
        os.fspath(p.relative_to(REPO))
        for p in pkg.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix in (".py", ".bash") or p.name == "py.typed")
    }


def test_make_install_lays_out_every_distro(tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=all", "PYTHONDIR=/usr/lib/python3/dist-packages")
    files = {os.fspath(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink()}
    expected = {
        "usr/sbin/dkms",
        "usr/bin/dkms",
        "usr/share/man/man8/dkms.8",
        "usr/share/bash-completion/completions/dkms",
        "usr/share/zsh/site-functions/_dkms",
        "usr/lib/kernel/install.d/40-dkms-hooks.install",
        "usr/share/libalpm/hooks/70-dkms-hooks-install.hook",
        "usr/share/libalpm/hooks/71-dkms-hooks-remove.hook",
        "etc/kernel/preinst.d/dkms-hooks",
        "etc/kernel/postinst.d/dkms-hooks",
        "etc/kernel/prerm.d/dkms-hooks",
        "etc/kernel/header_postinst.d/dkms-hooks",
        "etc/apt/apt.conf.d/90dkms-hooks",
        "usr/lib/dkms/dkms_autoinstaller",
        "usr/lib/dkms/common.postinst",
        "usr/share/dkms-hooks/dpkg/module-source.postinst",
        "usr/share/dkms-hooks/dpkg/module-source.prerm",
        "usr/lib/rpm/macros.d/macros.dkms-hooks",
        "usr/share/dkms-hooks/rpm/dkms-hooks-triggers.spec.in",
        "usr/share/dkms-hooks/eclass/dkms-hooks.eclass",
        "usr/lib/systemd/system/dkms-hooks.service",
        "etc/init.d/dkms-hooks",
        "usr/lib/python3/dist-packages/dkms_hooks-0.1.0.dist-info/METADATA",
        "usr/lib/python3/dist-packages/dkms_hooks-0.1.0.dist-info/top_level.txt",
        "usr/lib/python3/dist-packages/dkms_hooks-0.1.0.dist-info/INSTALLER",
    } | {f"usr/lib/python3/dist-packages/{f}" for f in shipped_python_files()}
    assert files == expected
    assert (dest / "etc/dkms/framework.conf.d").is_dir()
    assert os.readlink(dest / "usr/bin/dkms") == "../sbin/dkms"
    for exe in (
        "usr/sbin/dkms",
        "usr/lib/kernel/install.d/40-dkms-hooks.install",
        "etc/kernel/postinst.d/dkms-hooks",
        "usr/lib/dkms/common.postinst",
        "etc/init.d/dkms-hooks",
    ):
        assert os.access(dest / exe, os.X_OK), exe
    assert (dest / "usr/sbin/dkms").read_text().startswith("#!/usr/bin/python3\n")
    for hook in (dest / "usr/share/libalpm/hooks").iterdir():
        assert not os.access(hook, os.X_OK)
    assert "ExecStart=/usr/sbin/dkms event boot\n" in (dest / "usr/lib/systemd/system/dkms-hooks.service").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_boot_unit_verifies(tmp_path: Path) -> None:
    """systemd's own check of the installed unit: its syntax, its ordering against
    systemd-modules-load and sysinit.target, and that the command it runs is there."""
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=debian")
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={dest}", "dkms-hooks.service"],
                         capture_output=True, text=True)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    (dest / "usr/sbin/dkms").unlink()
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={dest}", "dkms-hooks.service"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "/usr/sbin/dkms is not executable" in res.stderr


def test_debian_helpers_run_the_packaged_interpreter(tmp_path: Path) -> None:
    """The helpers Debian's hooks and dh_dkms packages call by path are the package's: they
    run the system's python3 (PYTHON_SHEBANG), never the one that happened to run dkms."""
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=debian", "PYTHON_SHEBANG=/usr/bin/python3")
    for name in (p.name for p in Layout().debian_helpers):
        assert (dest / "usr/lib/dkms" / name).read_text() == (
            f"#!/bin/sh\n# installed by dkms-hooks\nexec /usr/bin/python3 -m dkms_hooks.cli.debian {name} \"$@\"\n")
    assert [p for p in Layout(sysroot=dest).debian_helpers if not p.exists()] == []
    assert [p.name for p in Layout(sysroot=tmp_path).debian_helpers if not p.exists()] == ["dkms_autoinstaller", "common.postinst"]


def test_debian_layout_takes_over_the_dkms_package_paths(tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=debian")
    for d in ("preinst", "postinst", "prerm", "header_postinst"):
        assert (dest / f"etc/kernel/{d}.d/dkms").read_text() == (
            REPO / f"hooks/kernel/{d}.d/dkms-hooks"
        ).read_text()
    assert (dest / "usr/lib/python3/dist-packages/dkms_hooks/model/readconf.bash").is_file()
    assert (dest / "usr/share/zsh/vendor-completions/_dkms").is_file()
    assert not (dest / "usr/share/libalpm").exists() and not (dest / "usr/lib/kernel").exists()


def test_installed_command_runs_from_the_installed_copy(tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    make_install(dest, "DISTRO=arch", "SBINDIR=/usr/bin", "PYTHONDIR=/usr/lib/site")
    assert not (dest / "usr/sbin").exists()
    site = dest / "usr/lib/site"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.fspath(site),
        "DKMS_HOOKS_SYSROOT": os.fspath(tmp_path),
    }
    # the host's python3, which has no dkms_hooks of its own: everything comes from the copy
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    out = subprocess.run(
        [
            python,
            "-c",
            "import dkms_hooks, importlib.metadata as m; print(dkms_hooks.__file__, m.version('dkms-hooks'))",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [os.fspath(site / "dkms_hooks/__init__.py"), "0.1.0"]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=arch\n")

    def installed_dkms(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, os.fspath(dest / "usr/bin/dkms"), *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True)

    res = installed_dkms("--version")
    assert (res.returncode, res.stdout) == (0, "dkms-3.4.3\n")
    (tmp_path / "var/lib/dkms").mkdir(parents=True)
    res = installed_dkms("status")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def release_tarball(dest_dir: Path, top: str) -> Path:
    """What a release archive holds: the checkout's files (tracked, or new and not ignored)
    under TOP/, as GitHub's archive/vVERSION.tar.gz would."""
    out = dest_dir / f"{top}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for name in checkout_files():
            tar.add(REPO / name, arcname=f"{top}/{name}", recursive=False)
    return out


def as_builder(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """makepkg refuses to run as root: run it as nobody then."""
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def build_dir() -> Iterator[Path]:
    # not under pytest's private temporary directory: the build user must reach it
    d = Path(tempfile.mkdtemp(prefix="dkms-hooks-pkg."))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@needs_git
@pytest.mark.skipif(shutil.which("makepkg") is None, reason="needs makepkg")
def test_pkgbuild_builds_a_pacman_package(build_dir: Path) -> None:
    shutil.copy(REPO / "packaging/arch/PKGBUILD", build_dir)
    release_tarball(build_dir, "dkms-hooks-0.1.0")
    shims = build_dir / "bin"
    shims.mkdir()
    (shims / "python").symlink_to("/usr/bin/python3")  # Arch's name for it
    if os.geteuid() == 0:
        shutil.chown(build_dir, "nobody", "nogroup")
        for p in build_dir.rglob("*"):
            os.lchown(p, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    env = {
        "PATH": f"{shims}:/usr/bin:/bin",
        "HOME": os.fspath(build_dir),
        "PKGEXT": ".pkg.tar.zst",
        "LC_ALL": "C.UTF-8",
    }
    info = as_builder(["makepkg", "--printsrcinfo"], build_dir, env)
    assert info.returncode == 0, info.stderr
    assert "\tprovides = dkms=3.4.3\n" in info.stdout and "\tconflicts = dkms\n" in info.stdout
    res = as_builder(["makepkg", "--nodeps", "--noconfirm"], build_dir, env)
    assert res.returncode == 0, res.stdout + res.stderr
    pkg = build_dir / "dkms-hooks-0.1.0-1-any.pkg.tar.zst"
    listing = subprocess.run(
        ["bsdtar", "-tf", os.fspath(pkg)], capture_output=True, text=True, check=True
    ).stdout
    files = set(listing.split())
    assert {
        "usr/bin/dkms",
        "usr/share/libalpm/hooks/70-dkms-hooks-install.hook",
        "usr/share/libalpm/hooks/71-dkms-hooks-remove.hook",
        "usr/lib/kernel/install.d/40-dkms-hooks.install",
        "usr/share/man/man8/dkms.8.gz",
        "usr/share/zsh/site-functions/_dkms",
        "usr/share/bash-completion/completions/dkms",
    } <= files
    assert not any(f.startswith("usr/sbin") or f.startswith("etc/kernel") for f in files)
    site = [f for f in files if f.endswith("site-packages/dkms_hooks/cli/main.py")]
    assert len(site) == 1 and site[0].startswith("usr/lib/python3")
    assert any(f.endswith(".pyc") and "dkms_hooks/cli/__pycache__/main" in f for f in files)
    pkginfo = subprocess.run(
        ["bsdtar", "-xOf", os.fspath(pkg), ".PKGINFO"], capture_output=True, text=True, check=True
    ).stdout
    assert "provides = dkms=3.4.3\n" in pkginfo and "depend = python-pluggy\n" in pkginfo


@needs_git
@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="needs rpmbuild")
def test_rpm_spec_parses_and_builds(tmp_path: Path) -> None:
    spec = REPO / "packaging/rpm/dkms-hooks.spec"
    # Fedora's python macros, which Debian's rpm lacks
    defines = [
        "--define",
        "python3_sitelib /usr/lib/python3.12/site-packages",
        "--define",
        "python3 /usr/bin/python3",
    ]
    parsed = subprocess.run(
        ["rpmspec", "-P", *defines, os.fspath(spec)], capture_output=True, text=True, check=True
    )
    assert "Provides:       dkms = 3.4.3" in parsed.stdout
    # the triggers are the ones the repository documents for packagers
    triggers = (REPO / "hooks/rpm/dkms-hooks-triggers.spec.in").read_text()
    body = "\n".join(line for line in triggers.splitlines() if not line.startswith("#"))
    assert body.strip() in spec.read_text()
    top = tmp_path / "rpmbuild"
    (top / "SOURCES").mkdir(parents=True)
    release_tarball(top / "SOURCES", "dkms-hooks-0.1.0")
    res = subprocess.run(
        ["rpmbuild", "-bb", "--nodeps", "--define", f"_topdir {top}", *defines, os.fspath(spec)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr  # also fails on installed but unlisted files
    rpm = next((top / "RPMS/noarch").glob("dkms-hooks-0.1.0-1*.noarch.rpm"))
    files = set(
        subprocess.run(
            ["rpm", "-qlp", os.fspath(rpm)], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert {
        "/usr/sbin/dkms",
        "/usr/bin/dkms",
        "/usr/lib/rpm/macros.d/macros.dkms-hooks",
        "/usr/lib/kernel/install.d/40-dkms-hooks.install",
        "/usr/lib/python3.12/site-packages/dkms_hooks/cli/main.py",
        "/usr/share/zsh/site-functions/_dkms",
        "/var/lib/dkms",
    } <= files
    scripts = subprocess.run(
        ["rpm", "-qp", "--filetriggers", os.fspath(rpm)], capture_output=True, text=True, check=True
    ).stdout
    assert "dkms event rpm filetrigger-in" in scripts and "dkms event rpm filetrigger-un" in scripts


@pytest.mark.parametrize(
    "ebuild", sorted(p.name for p in (REPO / "ebuild/sys-kernel/dkms-hooks").glob("*.ebuild"))
)
def test_ebuild_installs_with_make(ebuild: str, tmp_path: Path) -> None:
    """No Portage here: the ebuild is sourced by bash with the eclass functions it uses
    stubbed, and its src_install runs the real `make install`."""
    path = REPO / "ebuild/sys-kernel/dkms-hooks" / ebuild
    subprocess.run(["bash", "-n", os.fspath(path)], check=True)
    dest = tmp_path / "image"
    script = f"""
set -euo pipefail
inherit() {{ INHERITED+=" $*"; }}
python_gen_cond_dep() {{ echo "$1"; }}
python_get_sitedir() {{ echo /usr/lib/python3.11/site-packages; }}
python_optimize() {{ echo "optimize $D"; }}
einstalldocs() {{ :; }}
emake() {{ make -s -C {REPO} "$@"; }}
PV={ebuild.removeprefix("dkms-hooks-").removesuffix(".ebuild")} P=dkms-hooks-$PV
PYTHON_DEPS="python" PYTHON_USEDEP="python_targets_python3_11" PYTHON_REQUIRED_USE="python_targets_python3_11"
. {path}
[ "$EAPI" = 8 ] && [[ " $INHERITED " == *" python-single-r1 "* ]]
[ -n "$RDEPEND" ] && [[ "$RDEPEND" == *"!sys-kernel/dkms"* ]] && [[ "$RDEPEND" == *dev-python/pluggy* ]]
if [ "$PV" = 9999 ]; then [ -n "$EGIT_REPO_URI" ]; else [[ "$SRC_URI" == *"v$PV.tar.gz -> $P.tar.gz" ]]; fi
D={dest} EPREFIX= EPYTHON=python3.11 PYTHON=/usr/bin/python3.11
src_compile
src_install
"""
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (dest / "usr/sbin/dkms").read_text().startswith("#!/usr/bin/python3.11\n")
    assert (dest / "usr/lib/python3.11/site-packages/dkms_hooks/cli/main.py").is_file()
    assert (dest / "usr/lib/kernel/install.d/40-dkms-hooks.install").is_file()
    assert (dest / "usr/share/dkms-hooks/eclass/dkms-hooks.eclass").is_file()
