"""What dkms needs to know about one target kernel: where its headers and config are,
how its modules are compressed and signed. Also upstream's version ordering (VER)."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model.paths import Layout
from dkms_hooks.system import run
from dkms_hooks.system.compat import StrEnum


def ver_key(version: str) -> str:
    """Upstream's VER(): pad every run of digits to three places so plain string comparison
    orders versions (2.6.9-1 -> 002.006.009-001). Longer runs are left as they are."""

    def pad(m: re.Match[str]) -> str:
        digits = m.group(0)
        return digits.rjust(3, "0") if len(digits) < 3 else digits

    return re.sub(r"\d+", pad, version)


def ver_lt(a: str, b: str) -> bool:
    return ver_key(a) < ver_key(b)


def version_sort_key(version: str) -> list[tuple[int, int | str]]:
    """Like ``sort -V`` for the plain version strings kernels and modules use."""
    parts: list[tuple[int, int | str]] = []
    for num, text in re.findall(r"(\d+)|(\D+)", version):
        parts.append((1, int(num)) if num else (0, text))
    return parts


class Compression(StrEnum):
    none = ""
    gzip = ".gz"
    xz = ".xz"
    zstd = ".zst"

    @property
    def suffix(self) -> str:
        return self.value


_KCONFIG_COMPRESSION = {
    "CONFIG_MODULE_COMPRESS_GZIP": Compression.gzip,
    "CONFIG_MODULE_COMPRESS_XZ": Compression.xz,
    "CONFIG_MODULE_COMPRESS_ZSTD": Compression.zstd,
}


class KConfig:
    """A kernel config's values. Looked up in the file's text when asked: a build asks for a
    handful of its ~6000 lines, and splitting them all costs more than the rest of its setup."""

    def __init__(self, text: str) -> None:
        self._text = "\n" + text

    def get(self, name: str, default: str = "") -> str:
        at = self._text.rfind(f"\n{name}=")
        if at < 0:
            return default
        start = at + len(name) + 2
        end = self._text.find("\n", start)
        return self._text[start:] if end < 0 else self._text[start:end]


@functools.lru_cache(maxsize=32)
def _read_kconfig(path: str, mtime: float) -> KConfig:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return KConfig(f.read())
    except OSError:
        return KConfig("")


def read_kconfig(path: Path) -> KConfig:
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return KConfig("")
    return _read_kconfig(os.fspath(path), mtime)


@dataclass(frozen=True)
class KernelTarget:
    kver: str
    arch: str
    source_dir: Path
    config: Path

    @classmethod
    def resolve(
        cls,
        layout: Layout,
        kver: str,
        arch: str,
        *,
        source_dir: Path | None = None,
        config: Path | None = None,
    ) -> KernelTarget:
        src = source_dir if source_dir is not None else layout.install_tree / kver / "build"
        if config is None:
            auto = src / "include/config/auto.conf"
            config = auto if auto.exists() else src / ".config"
        return cls(kver, arch, src, config)

    @property
    def has_headers(self) -> bool:
        return (self.source_dir / "include").exists()

    def kconfig(self) -> KConfig:
        return read_kconfig(self.config)

    def sig_hash(self) -> str | None:
        v = self.kconfig().get("CONFIG_MODULE_SIG_HASH")
        return v.strip('"') if v else None

    def is_clang(self) -> bool:
        return self.kconfig().get("CONFIG_CC_IS_CLANG") == "y"

    def compression(self, layout: Layout) -> Compression:
        """What the kernel's own modules use: the installed module tree says it best; a kernel
        that has only headers so far is asked through its CONFIG_MODULE_COMPRESS_* choice
        (upstream looks at installed files only, and so never compresses for a kernel whose
        modules are not installed yet)."""
        found = _tree_compression(os.fspath(layout.install_tree / self.kver))
        if found is not None:
            return found
        kconfig = self.kconfig()
        for key, comp in _KCONFIG_COMPRESSION.items():
            if kconfig.get(key) == "y":
                # a module kmod cannot decompress could not be loaded: stay uncompressed then
                return comp if kmod_can_read(comp) else Compression.none
        return Compression.none


_KMOD_FEATURE = {Compression.gzip: "ZLIB", Compression.xz: "XZ", Compression.zstd: "ZSTD"}


@functools.lru_cache(maxsize=1)
def _kmod_features() -> frozenset[str] | None:
    try:
        res = run.run(["kmod", "--version"])
    except run.ToolMissing:
        return None
    return frozenset(w[1:] for w in res.stdout.split() if w.startswith("+"))


def kmod_can_read(comp: Compression) -> bool:
    """Whether this host's kmod reads modules compressed this way (unknown counts as yes)."""
    if comp is Compression.none:
        return True
    features = _kmod_features()
    return features is None or _KMOD_FEATURE[comp] in features


_TREE_COMPRESSION: dict[str, Compression | None] = {}


def _tree_compression(tree: str) -> Compression | None:
    # asked once per module line by status; the answer only changes when the first module
    # lands in an empty tree, and then it lands in the compression this already chose
    if tree not in _TREE_COMPRESSION or _TREE_COMPRESSION[tree] is None:
        _TREE_COMPRESSION[tree] = _compression_of_tree(Path(tree))
    return _TREE_COMPRESSION[tree]


def _compression_of_tree(tree: Path) -> Compression | None:
    # Upstream lets .zst win over .xz over .gz when several exist; a real tree has one kind.
    seen: set[Compression] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        # build/ and source/ are symlinks to headers; os.walk does not follow them.
        for name in filenames:
            if ".ko" not in name:
                continue
            if name.endswith(".ko.zst"):
                return Compression.zstd
            if name.endswith(".ko.xz"):
                seen.add(Compression.xz)
            elif name.endswith(".ko.gz"):
                seen.add(Compression.gzip)
            elif name.endswith(".ko"):
                seen.add(Compression.none)
        if Compression.xz in seen:
            return Compression.xz
    if Compression.gzip in seen:
        return Compression.gzip
    if seen:
        return Compression.none
    return None
