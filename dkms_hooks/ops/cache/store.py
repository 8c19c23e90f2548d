"""The build cache on this host: one directory per key holding the built, stripped,
unsigned, uncompressed modules, the build's make.log and a manifest of hashes.

An entry appears by one rename and goes by one rename, so a reader sees a whole entry or
none; it may still vanish under a reader (a prune), which then fails verification and
builds. The manifest's modification time is the entry's last use."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.ops.cache.key import FORMAT, file_sha256

MANIFEST = "manifest.json"
#: every file an entry may hold
NAMES = re.compile(r"^(manifest\.json|Module\.symvers|make\.log|[0-9]+\.ko)$")
#: the artifact type of an entry, here and in a registry
ARTIFACT_TYPE = "application/vnd.dkms-hooks.build.v1"


@dataclass(frozen=True)
class Built:
    """One module file of an entry: where the build put it, and the file."""

    built_path: str
    path: Path


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    manifest: dict[str, object]

    @property
    def modules(self) -> list[Built]:
        items = self.manifest.get("modules", [])
        assert isinstance(items, list)
        return [Built(str(m["built_path"]), self.path / str(m["file"])) for m in items]

    @property
    def symvers(self) -> Path | None:
        return self.path / "Module.symvers" if "Module.symvers" in self.files else None

    @property
    def files(self) -> dict[str, str]:
        f = self.manifest.get("files", {})
        assert isinstance(f, dict)
        return {str(k): str(v) for k, v in f.items()}

    @property
    def signed(self) -> bool:
        """Modules signed by the fleet's key (pulled from a registry): installed as they are."""
        return self.manifest.get("signed") is True

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    @property
    def last_used(self) -> float:
        try:
            return (self.path / MANIFEST).stat().st_mtime
        except OSError:
            return 0.0


def write_entry(directory: Path, key: str, meta: dict[str, object], modules: Sequence[Built],
                symvers: Path | None, log: Path | None) -> dict[str, Path]:
    """An entry's files in ``directory`` (modules as ``0.ko``, ``1.ko``...), and its manifest
    hashing them; the files by name, the manifest among them."""
    files: dict[str, Path] = {}
    listed = []
    for i, m in enumerate(modules):
        name = f"{i}.ko"
        shutil.copyfile(m.path, directory / name)
        files[name] = directory / name
        listed.append({"built_path": m.built_path, "file": name})
    for name, src in (("Module.symvers", symvers), ("make.log", log)):
        if src is not None and src.is_file():
            shutil.copyfile(src, directory / name)
            files[name] = directory / name
    manifest = {
        "format": FORMAT,
        "artifactType": ARTIFACT_TYPE,
        "key": key,
        **meta,
        "modules": listed,
        "files": {name: file_sha256(path) for name, path in sorted(files.items())},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    files[MANIFEST] = directory / MANIFEST
    return files


class HostCache:
    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Entry | None:
        path = self._dir(key)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        return Entry(key, path, manifest)

    def touch(self, entry: Entry) -> None:
        try:
            os.utime(entry.path / MANIFEST)
        except OSError:
            pass

    def put(self, key: str, meta: dict[str, object], modules: Sequence[Built], symvers: Path | None,
            log: Path | None) -> Entry | None:
        """Add an entry (None if one with this key is already there)."""
        if self._dir(key).exists():
            if self.get(key) is not None:
                return None
            self.discard(key)  # a broken entry (no readable manifest) must not block this key
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".new-{key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir(mode=0o755)
        try:
            write_entry(tmp, key, meta, modules, symvers, log)
            return self.adopt(key, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def adopt(self, key: str, directory: Path) -> Entry | None:
        """Move a complete entry (one pulled from a registry) into place in one rename."""
        final = self._dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(directory, final)
        except OSError:
            return None  # another build of the same inputs got there first
        return self.get(key)

    def discard(self, key: str) -> None:
        self._remove(self._dir(key))

    def _remove(self, path: Path) -> None:
        trash = self.root / f".gone-{path.name[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass

    def entries(self) -> Iterator[Entry]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.name.startswith(".") or not sub.is_dir():
                continue
            for d in sorted(sub.iterdir()):
                entry = self.get(d.name)
                if entry is not None:
                    yield entry

    def prune(self, max_size: int | None = None) -> list[Entry]:
        """Drop the least recently used entries until the cache fits; what went."""
        limit = self.max_size if max_size is None else max_size
        sized = [(e, e.size) for e in self.entries()]
        total = sum(s for _, s in sized)
        gone = []
        for entry, size in sorted(sized, key=lambda es: es[0].last_used):
            if total <= limit:
                break
            self._remove(entry.path)
            total -= size
            gone.append(entry)
        self._sweep()
        return gone

    def _sweep(self) -> None:
        """Half-written entries that a killed dkms left (older than an hour)."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.name.startswith((".new-", ".gone-", ".pull-")):
                try:
                    if time.time() - p.stat().st_mtime > 3600:
                        shutil.rmtree(p, ignore_errors=True)
                except OSError:
                    pass

    def clear(self) -> int:
        n = 0
        for entry in list(self.entries()):
            self._remove(entry.path)
            n += 1
        self._sweep()
        return n
