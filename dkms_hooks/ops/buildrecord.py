"""The last build result of each module/version for each kernel/arch, kept as a small JSON
file in the tree (``.dkms-hooks/builds/<module>/<version>/<kver>-<arch>.json``) so that
``status --json`` can say how the last build went and ``plan`` can tell a version that is
known to fail on a kernel. A failed build's make.log is kept beside, per kernel, because
the next build of the module overwrites the one in its build directory."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.system.errors import DkmsError

#: exit codes of a build that ran and failed (patches, make, a missing .ko), as opposed to
#: one that never started (bad dkms.conf, no headers, missing BUILD_DEPENDS...), which
#: leaves nothing behind
BUILD_FAILURES = frozenset({5, 6, 7, 10})


@dataclass(frozen=True)
class BuildRecord:
    module: str
    version: str
    kernel: str
    arch: str
    #: "ok" or "failed"
    result: str
    #: seconds since the epoch, UTC
    time: float
    exit: int = 0
    message: str = ""
    log: str = ""
    #: where the modules came from: "make", "cache" (this host's) or "registry"
    source: str = "make"
    #: why the cache or the registry was not used, when it was asked and could not serve
    cache_note: str = ""
    #: the build cache's key for this build ("" when it was not cached)
    cache_key: str = ""

    @property
    def build_failed(self) -> bool:
        return self.result == "failed" and self.exit in BUILD_FAILURES

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))
        d["log"] = self.log or None
        return d


def record_path(ctx: Context, module: str, version: str, kver: str, arch: str) -> Path:
    return ctx.layout.build_records(module, version) / f"{kver}-{arch}.json"


def failed_log_path(ctx: Context, module: str, version: str, kver: str, arch: str) -> Path:
    return ctx.layout.failed_logs(module, version) / f"{kver}-{arch}.make.log"


def keep_failed_log(ctx: Context, module: str, version: str, kver: str, arch: str) -> Path | None:
    """A failed build leaves make.log in its build directory, where the next kernel's build
    overwrites it: keep a copy per kernel."""
    src = ctx.layout.private_build_dir(module, version, kver, arch) / "make.log"
    if not src.is_file():
        src = ctx.layout.build_dir(module, version) / "make.log"
    if not src.is_file():
        return None
    dest = failed_log_path(ctx, module, version, kver, arch)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest


def _write(ctx: Context, record: BuildRecord) -> None:
    path = record_path(ctx, record.module, record.version, record.kernel, record.arch)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(record)}.new")
        tmp.write_text(json.dumps(asdict(record)) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # the record is a convenience: never fail a build over it


def record_success(ctx: Context, module: str, version: str, kver: str, arch: str, *, source: str = "make",
                   cache_note: str = "", cache_key: str = "") -> None:
    log = ctx.layout.built_dir(module, version, kver, arch) / "log/make.log"
    failed_log_path(ctx, module, version, kver, arch).unlink(missing_ok=True)
    _write(ctx, BuildRecord(module, version, kver, arch, "ok", time.time(), 0, "",
                            os.fspath(log) if log.is_file() else "", source, cache_note, cache_key))


def record_failure(ctx: Context, module: str, version: str, kver: str, arch: str, error: DkmsError) -> None:
    try:
        log = keep_failed_log(ctx, module, version, kver, arch)
    except OSError:
        log = None
    _write(ctx, BuildRecord(module, version, kver, arch, "failed", time.time(), error.code,
                            error.lines[0] if error.lines else "", os.fspath(log) if log else ""))


def read(ctx: Context, module: str, version: str, kver: str, arch: str) -> BuildRecord | None:
    return _load(record_path(ctx, module, version, kver, arch))


def newest(ctx: Context, module: str, version: str, kver: str = "") -> BuildRecord | None:
    """The most recent record of this module/version (for this kernel, when given)."""
    d = ctx.layout.build_records(module, version)
    try:
        names = [n for n in os.listdir(d) if n.endswith(".json") and not n.startswith(".")]
    except OSError:
        return None
    records = [r for n in names if (r := _load(d / n)) is not None and (not kver or r.kernel == kver)]
    return max(records, key=lambda r: r.time) if records else None


def _load(path: Path) -> BuildRecord | None:
    try:
        d = json.loads(path.read_text())
        return BuildRecord(str(d["module"]), str(d["version"]), str(d["kernel"]), str(d["arch"]),
                           str(d["result"]), float(d["time"]), int(d.get("exit", 0)), str(d.get("message", "")),
                           str(d.get("log", "")), str(d.get("source", "make")), str(d.get("cache_note", "")),
                           str(d.get("cache_key", "")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
