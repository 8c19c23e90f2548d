"""Debian's helpers that packages call by path: /usr/lib/dkms/dkms_autoinstaller (from the
kernel's postinst.d hooks and the SysV service) and /usr/lib/dkms/common.postinst (from
every dh_dkms-generated module package postinst)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dkms_hooks.cli import main as cli
from dkms_hooks.model import settings
from dkms_hooks.model.kernel import version_sort_key
from dkms_hooks.model.paths import Layout
from dkms_hooks.system import run
from dkms_hooks.system.console import Console


#: what packages call by path under /usr/lib/dkms; the package (make install) lays them
class _Dkms:
    """Run our dkms in this process, as the helpers' shell originals run the command."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, quiet_stdout: bool = False) -> int:
        out = open(os.devnull, "w") if quiet_stdout else sys.stdout
        try:
            return cli.main(list(args), console=Console(out, sys.stderr), env=dict(self.env))
        finally:
            if quiet_stdout:
                out.close()

    def capture(self, *args: str) -> str:
        buf = io.StringIO()
        cli.main(list(args), console=Console(buf, sys.stderr), env=dict(self.env))
        return buf.getvalue()


def autoinstaller(argv: Sequence[str], *, moddir: Path = Path("/lib/modules")) -> int:
    verb = argv[0] if argv else ""
    if verb == "start":
        kernel = argv[1] if len(argv) > 1 and argv[1] else os.uname().release
        if not (moddir / kernel / "build/include").is_dir():
            print(f"Automatic installation of modules for kernel {kernel} was skipped since the kernel headers "
                  "for this kernel do not seem to be installed.", flush=True)
            return 0
        return 0 if _Dkms(dict(os.environ))("autoinstall", "--kernelver", kernel) == 0 else 1
    if verb in ("stop", "restart", "force-reload", "status", "reload"):
        return 0
    print("Usage: dkms_autoinstaller {start}", flush=True)
    return 2


def _say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def _newest_debian_kernel(sysroot: Path, current: str, moddir: Path) -> str:
    """The newest kernel with a /boot/config-* file, compared as dpkg compares versions."""

    def ge(a: str, b: str) -> bool:
        if run.which("dpkg"):
            return run.run(["dpkg", "--compare-versions", a, "ge", b]).returncode == 0
        return version_sort_key(a) >= version_sort_key(b)

    cur_version = current.split("-", 1)[0]
    cur_abi = current.split("-", 1)[1].split("-", 1)[0] if "-" in current else current
    newest = ""
    newest_key = ""
    for cfg in sorted((sysroot / "boot").glob("config-*")):
        if not cfg.is_file():
            continue
        kernel = cfg.name.split("-", 1)[1]
        version = kernel.split("-", 1)[0]
        abi = kernel.split("-", 1)[1].split("-", 1)[0] if "-" in kernel else kernel
        compare_to = f"{cur_version}-{cur_abi}" if not newest else newest_key
        if ge(f"{version}-{abi}", compare_to):
            newest, newest_key = kernel, f"{version}-{abi}"
    return newest if newest and (moddir / newest).exists() else ""


def _kernels_with_build(moddir: Path) -> list[str]:
    try:
        names = [n for n in os.listdir(moddir) if os.path.lexists(moddir / n / "build")]
    except OSError:
        return []
    return sorted(names, key=version_sort_key)


def _building_for(kernels: list[str], joined_by_newlines: bool) -> str:
    if not joined_by_newlines:
        return "Building for " + " ".join(kernels)
    if len(kernels) == 1:
        return f"Building for {kernels[0]}"
    return "Building for " + ", ".join(kernels[:-1]) + f" and {kernels[-1]}"


def common_postinst(argv: Sequence[str], *, sysroot: Path = Path("/"), moddir: Path = Path("/lib/modules"),
                    dkms_tree: Path = Path("/var/lib/dkms"), source_tree: Path = Path("/usr/src")) -> int:
    args = list(argv) + [""] * 5
    name, version, tarball_root, arch, upgrade = args[:5]
    if not name or not version:
        _say("Need NAME and VERSION defined", "ARCH is optional")
        return 1
    layout = Layout(sysroot=sysroot)
    if layout.no_autoinstall_flag.is_file():
        _say("autoinstall for dkms modules has been disabled.")
        return 0
    env = dict(os.environ)
    fw = settings.read_framework(layout, ["autoinstall_all_kernels", "continue_on_error"], scope={},
                                 env={**env, "continue_on_error": env.get("continue_on_error", "true")})
    continue_on_error = fw.get("continue_on_error", "true")
    kernels = _kernels_with_build(moddir)
    listed_by_ls = True
    current = os.uname().release
    dkms = _Dkms(env)
    if (dkms_tree / name / version).exists():
        _say(f"Removing old {name}/{version} DKMS files...")
        dkms("remove", "-m", name, "-v", version, "--all")
    tarball = Path(tarball_root) / f"{name}-{version}.dkms.tar.gz" if tarball_root else None
    if tarball is not None and tarball.is_file():
        if dkms("ldtarball", "--archive", str(tarball)) != 0:
            _say("", "", f"Unable to load DKMS tarball {tarball}.", "Common causes include: ",
                 " - You must be using DKMS 2.1.0.0 or later to support binaries only",
                 "   distribution specific archives.", " - Corrupt distribution specific archive", "", "")
            return 2
    elif (source_tree / f"{name}-{version}").is_dir():
        _say(f"Loading new {name}/{version} DKMS files...")
        dkms("add", "-m", name, "-v", version, quiet_stdout=True)
    conf = dkms_tree / name / version / "source/dkms.conf"
    value = run.run(["bash", "-c", 'AUTOINSTALL=; . "$1" >/dev/null 2>&1; echo $AUTOINSTALL', "bash", conf],
                    stderr=run.DEVNULL).stdout.strip()
    if not value:
        _say(f"Not building the {name} module which does not have AUTOINSTALL enabled.")
        return 0
    newest = _newest_debian_kernel(sysroot, current, moddir) if run.which("dpkg") else ""
    if not fw.get("autoinstall_all_kernels"):
        listed_by_ls = False
        if (moddir / current).exists():
            kernels = [current, newest] if newest and newest != current else [current]
        else:
            _say(f"It is likely that {current} belongs to a chroot's host")
            kernels = [newest] if newest and upgrade else kernels
            listed_by_ls = not (newest and upgrade)
    if not kernels:
        _say("WARNING: No kernel headers were found, skipping module build.",
             f"         To get the headers for the running kernel ({current})",
             f"         please install the linux-headers-{current} package.")
        return 0
    _say(_building_for(kernels, listed_by_ls))
    if arch:
        _say(f"Building for architecture {arch}")
    arch_args = ["-a", arch] if arch else []
    exit_code = 0
    failed = ""
    for kernel in kernels:
        _say("")
        if "BOOT" in kernel:
            _say(f"Module build and install for {kernel} was skipped as ", "it is a BOOT variant")
            continue
        status = dkms.capture("status", "-m", name, "-v", version, "-k", kernel, *arch_args)
        if ": built" not in status:
            if not (dkms_tree / name / version / "source").is_symlink():
                _say("This package appears to be a binaries-only package",
                     f" you will not be able to build against kernel {kernel}",
                     " since the package source was not provided")
                continue
            if (moddir / kernel / "build/include").exists():
                _say(f"Building initial module {name}/{version} for {kernel}")
                res = dkms("build", "-m", name, "-v", version, "-k", kernel, *arch_args)
                if res == 77:
                    continue
                if res != 0:
                    exit_code = res
                    if continue_on_error != "true":
                        break
                    failed += f" {kernel}"
                    continue
            else:
                _say(f"Module build for kernel {kernel} was skipped since the",
                     "kernel headers for this kernel do not seem to be installed.")
                continue
            status = dkms.capture("status", "-m", name, "-v", version, "-k", kernel, *arch_args)
        if ": built" in status:
            dkms("install", "-m", name, "-v", version, "-k", kernel, *arch_args)
    if failed:
        _say(f"Builds for the following kernel(s) failed:{failed}")
    return exit_code


def _trees(root: Path) -> dict[str, Path]:
    """The trees framework.conf names (the shell originals hard-code the defaults)."""
    defaults = {"dkms_tree": "/var/lib/dkms", "source_tree": "/usr/src", "install_tree": "/lib/modules"}
    values = settings.read_framework(Layout(sysroot=root), list(defaults), scope=defaults, env=dict(os.environ))
    return {k: Path(values.get(k) or v) for k, v in defaults.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    which = args[0] if args else ""
    root = Path(os.environ.get("DKMS_HOOKS_SYSROOT", "/"))
    if which == "dkms_autoinstaller":
        return autoinstaller(args[1:], moddir=_trees(root)["install_tree"])
    if which == "common.postinst":
        t = _trees(root)
        return common_postinst(args[1:], sysroot=root, moddir=t["install_tree"], dkms_tree=t["dkms_tree"],
                               source_tree=t["source_tree"])
    print("usage: python -m dkms_hooks.cli.debian {dkms_autoinstaller|common.postinst} ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

