"""The build cache's key: a hash of everything that goes into a built ``.ko``, and nothing
else, so that the same inputs find the same entry on any host and anything that could
change the result misses. README's "Build cache" section lists the parts; when in doubt
a part is in, because a miss costs one build and a wrong hit costs a broken module."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model.kernel import KernelTarget
from dkms_hooks.system import run

#: bump when the key's parts or the entry's layout change: old entries then simply miss
FORMAT = 1

#: files of the headers that identify the kernel a module is built against: its
#: configuration, the CRCs of what it exports, its release and version and (Debian's
#: package.h, compile.h) its package and compiler; each generated directory whole
_HEADER_FILES = (".config", "Module.symvers", "Makefile", "include/config/kernel.release",
                 "include/config/auto.conf")
_HEADER_DIRS = ("include/generated",)

#: environment variables that reach kbuild and can change what it compiles
_BUILD_VARS = re.compile(r"^(ARCH|CROSS_COMPILE|SUBARCH|CC|LD|AR|NM|OBJCOPY|OBJDUMP|STRIP|HOSTCC|LLVM\w*|"
                         r"KERNEL_\w+|KBUILD_\w+|KCFLAGS|KCPPFLAGS|KAFLAGS|KRUSTFLAGS|CFLAGS\w*|"
                         r"EXTRA_\w*FLAGS|CONFIG_\w+|INSTALL_MOD_\w+|KERNELRELEASE|KERNELVERSION)$")


_VAR_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_ABS_PATH = re.compile(r"(?<![\w.$})`~-])(/[^\s'\";&|()<>`]+)")
#: places a build command may name without the key having to see inside: tools, devices
_TOOL_DIRS = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/lib/ccache/", "/usr/local/bin/", "/dev/")


def unseen_paths(commands: Sequence[str], covered: Sequence[Path]) -> list[str]:
    """Absolute paths the build commands name outside what the key covers (the build
    directory, the headers, the module's tree); a build that reads them cannot be keyed."""
    roots = [os.fspath(p).rstrip("/") + "/" for p in covered]
    out = []
    for command in commands:
        for path in _ABS_PATH.findall(command):
            probe = path.rstrip("/") + "/"
            if probe.startswith(_TOOL_DIRS) or any(probe.startswith(r) for r in roots):
                continue
            out.append(path)
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path, *, follow: bool = True) -> str:
    """The file's SHA-256. ``follow=False``: read without following a link or blocking on a
    FIFO (a build user owns the build directory, and could swap a file for either)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW | os.O_NONBLOCK))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path, *, skip: Sequence[str] = ()) -> str:
    """Every path below ``root`` with its type, permission bits and bytes (a symlink: its
    target), in a fixed order; owners and times are left out so that copies match."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                h.update(f"L {rel}\0{os.readlink(full)}\n".encode(errors="surrogateescape"))
            elif stat.S_ISREG(st.st_mode):
                h.update(f"F {rel}\0{mode:o}\0{file_sha256(Path(full), follow=False)}\n".encode(errors="surrogateescape"))
        for name in dirs:
            if not os.path.islink(os.path.join(dirpath, name)):
                st = os.lstat(os.path.join(dirpath, name))
                rel = os.path.normpath(os.path.join(rel_dir, name))
                h.update(f"D {rel}\0{stat.S_IMODE(st.st_mode):o}\n".encode(errors="surrogateescape"))
    return h.hexdigest()


_headers_memo: dict[tuple[object, ...], str] = {}


def headers_identity(kernel: KernelTarget) -> str:
    """A hash of the files that identify the kernel's headers (see _HEADER_FILES), once per
    process for each state of them."""
    src = Path(os.path.realpath(kernel.source_dir))
    stamp: list[object] = [os.fspath(src), os.fspath(kernel.config)]
    for name in ("Module.symvers", "include/generated/utsrelease.h", "include/generated/autoconf.h"):
        try:
            st = os.stat(src / name)
            stamp += [st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            stamp.append(None)
    key = tuple(stamp)
    if key in _headers_memo:
        return _headers_memo[key]
    parts: dict[str, str] = {}
    for name in _HEADER_FILES:
        path = kernel.config if name == ".config" else src / name
        if path.is_file():
            parts[name] = file_sha256(path)
    for name in _HEADER_DIRS:
        if (src / name).is_dir():
            parts[name] = tree_digest(src / name)
    for arch_dir in sorted((src / "arch").glob("*/include/generated")):
        parts[os.fspath(arch_dir.relative_to(src))] = tree_digest(arch_dir)
    _headers_memo[key] = value = _sha(json.dumps(parts, sort_keys=True).encode())
    return value


_tools_memo: dict[tuple[str, str], str] = {}


def tool_identity(tool: str, env: Mapping[str, str]) -> str:
    """What ``TOOL --version`` says (distributions put their package version in it)."""
    memo = (tool, env.get("PATH", ""))
    if memo not in _tools_memo:
        try:
            res = run.run([*tool.split(), "--version"], env=dict(env))
            _tools_memo[memo] = res.stdout if res.returncode == 0 else f"exit {res.returncode}"
        except run.ToolMissing:
            _tools_memo[memo] = "missing"
    return _tools_memo[memo]


@dataclass(frozen=True)
class KeyInputs:
    """What a build is made of, gathered by the build step just before it runs make."""

    module: str
    version: str
    kernel: KernelTarget
    #: the dkms.conf's MAKE for this kernel, with the tree's own paths made relative
    make_command: str
    clean_command: str
    #: (built path, strip) for every module the build must produce
    modules: tuple[tuple[str, bool], ...]
    #: the build directory after copying, patching and PRE_BUILD
    build_dir: Path
    #: the environment make runs with
    env: Mapping[str, str]
    #: what --directive and build_environment set
    extra_env: Mapping[str, str]
    #: the Module.symvers of each BUILD_DEPENDS module built for the kernel
    dependency_symvers: tuple[tuple[str, str], ...] = ()


def compute(inputs: KeyInputs, *, trees: Sequence[Path]) -> str:
    """The entry's key. ``trees``: the dkms tree and the headers, whose place differs from
    host to host but not what is built from it."""
    make, clean = inputs.make_command, inputs.clean_command
    for i, tree in enumerate(trees):
        make = make.replace(os.fspath(tree), f"@{i}@")
        clean = clean.replace(os.fspath(tree), f"@{i}@")
    env = inputs.env
    kernel = inputs.kernel
    # what the shell expands when it runs the commands
    referenced = set(_VAR_REF.findall(inputs.make_command + "\n" + inputs.clean_command))
    parts = {
        "format": FORMAT,
        "kernel": kernel.kver,
        "arch": kernel.arch,
        "headers": headers_identity(kernel),
        "cc": tool_identity(env.get("CC") or "gcc", env),
        "ld": tool_identity(env.get("LD") or "ld", env),
        "make": make,
        "clean": clean,
        "modules": [list(m) for m in inputs.modules],
        "env": sorted((k, v) for k, v in env.items()
                      if (_BUILD_VARS.match(k) or k in referenced) and k != "MAKEFLAGS"),
        "extra_env": sorted(inputs.extra_env.items()),
        "depends": sorted(inputs.dependency_symvers),
        "source": tree_digest(inputs.build_dir, skip=("make.log",)),
    }
    return _sha(json.dumps(parts, sort_keys=True).encode())
