"""Shared fixtures: a sandbox of trees (dkms tree, source tree, install tree, sysroot)
in a temporary directory, with real kernel headers linked in, and a way to run the real
``dkms`` command against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EXAMPLE = REPO / "examples" / "dkms_hooks_example-1.0"
HOST_MODULES = Path("/lib/modules")


def kernels_with_headers() -> list[str]:
    if not HOST_MODULES.is_dir():
        return []
    return sorted(k for k in os.listdir(HOST_MODULES) if (HOST_MODULES / k / "build" / "include").is_dir())


KERNELS = kernels_with_headers()
#: set where the project is installed (another root's python3): the commands the tests run
#: import the installed dkms_hooks, not this checkout
INSTALLED = bool(os.environ.get("DKMS_HOOKS_TEST_INSTALLED"))
SOURCE_PATH = {} if INSTALLED else {"PYTHONPATH": str(REPO)}
needs_kernel = pytest.mark.skipif(not KERNELS, reason="no kernel headers installed (run .ci/run)")


#: tests that need this checkout's git metadata (a copy installed elsewhere has none)
needs_git = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                               reason="needs a git checkout")


def checkout_files() -> list[str]:
    """What a release holds: this checkout's files, tracked or new and not ignored."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return sorted(n for n in names if n and (REPO / n).exists())


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def dkms_tree(self) -> Path:
        return self.root / "var/lib/dkms"

    @property
    def source_tree(self) -> Path:
        return self.root / "usr/src"

    @property
    def install_tree(self) -> Path:
        return self.root / "lib/modules"

    @property
    def etc(self) -> Path:
        return self.root / "etc/dkms"

    def add_kernel(self, kver: str, *, installed: bool = True) -> Path:
        """Link a real kernel's headers in; ``installed`` gives it a modules.dep (so depmod runs)."""
        kdir = self.install_tree / kver
        kdir.mkdir(parents=True, exist_ok=True)
        if not (kdir / "build").exists():
            (kdir / "build").symlink_to(HOST_MODULES / kver / "build")
        if installed:
            for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
                src = HOST_MODULES / kver / name
                if src.is_file():
                    (kdir / name).write_bytes(src.read_bytes())
            (kdir / "modules.dep").touch()
        return kdir

    def add_source(self, src: Path, name: str | None = None) -> Path:
        dest = self.source_tree / (name or src.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
        return dest

    def dkms(self, *args: str, env: dict[str, str] | None = None, check: bool = False) -> Result:
        argv = [
            sys.executable, "-m", "dkms_hooks",
            "--dkmstree", str(self.dkms_tree),
            "--sourcetree", str(self.source_tree),
            "--installtree", str(self.install_tree),
            *args,
        ]  # fmt: skip
        proc = subprocess.run(argv, env={**self.env, **(env or {})}, capture_output=True, text=True)
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"dkms {' '.join(args)} failed with {proc.returncode}:\n{res.output}")
        return res

    def event(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Result:
        """``dkms event ...`` with the whole sandbox as its root (DKMS_HOOKS_SYSROOT)."""
        proc = subprocess.run([sys.executable, "-m", "dkms_hooks", "event", *args], input=stdin,
                              env={**self.env, **(env or {})}, capture_output=True, text=True)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def snapshot(self) -> dict[str, str]:
        """Every path under the sandbox with what it is, to prove a failed command changed nothing."""
        out = {}
        for dirpath, dirs, files in os.walk(self.root):
            for name in dirs + files:
                p = Path(dirpath, name)
                rel = str(p.relative_to(self.root))
                if p.is_symlink():
                    out[rel] = "-> " + os.readlink(p)
                elif p.is_file():
                    out[rel] = f"file {p.stat().st_size}"
                else:
                    out[rel] = "dir"
        return out


@pytest.fixture
def dkms_on_path(tmp_path: Path) -> str:
    """A directory holding a ``dkms`` command that runs this checkout, for real clients'
    hooks to find on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "dkms"
    path = "" if INSTALLED else f'PYTHONPATH="{REPO}" '
    wrapper.write_text(f'#!/bin/sh\n{path}exec "{sys.executable}" -m dkms_hooks "$@"\n')
    wrapper.chmod(0o755)
    return str(bindir)


def make_sandbox(base: Path) -> Sandbox:
    """An empty sandbox root under ``base`` (also its HOME and TMPDIR)."""
    root = base / "root"
    for d in ("var/lib/dkms", "usr/src", "lib/modules", "etc/dkms/framework.conf.d", "boot"):
        (root / d).mkdir(parents=True)
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(base),
        "TMPDIR": str(base),
        "DKMS_HOOKS_SYSROOT": str(root),
        **SOURCE_PATH,
    }
    return Sandbox(root, env)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    yield make_sandbox(tmp_path)
