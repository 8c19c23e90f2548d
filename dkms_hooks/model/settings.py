"""Settings: upstream's framework.conf (bash, read as upstream reads it) and our own TOML.

framework.conf and framework.conf.d/*.conf are sourced by bash and only upstream's known
variables are taken back, so a file that defines functions or other variables changes
nothing. Variables upstream never resets at start-up also come from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dkms_hooks.model import bashconf
from dkms_hooks.model.paths import Layout
from dkms_hooks.system import compat, run

NONSIGNING = ["source_tree", "dkms_tree", "install_tree", "tmp_location", "verbose", "symlink_modules", "autoinstall_all_kernels", "modprobe_on_install", "parallel_jobs", "compress_gzip_opts", "compress_xz_opts", "compress_zstd_opts", "build_environment", "post_transaction"]
SIGNING = ["sign_file", "mok_signing_key", "mok_certificate", "try_sign_modules"]
#: upstream sets these before reading framework.conf, so the environment cannot change them
_RESET = {
    "dkms_tree": "",
    "source_tree": "",
    "install_tree": "",
    "tmp_location": "",
    "verbose": "",
    "symlink_modules": "",
    "compress_gzip_opts": "",
    "compress_xz_opts": "--check=crc32 --lzma2=dict=1MiB",
    "compress_zstd_opts": "-q --rm -T0",
}


def read_framework(
    layout: Layout,
    names: list[str],
    *,
    scope: Mapping[str, str],
    env: Mapping[str, str],
) -> dict[str, str]:
    """The named variables after framework.conf and framework.conf.d/*.conf, with the
    environment's value (or upstream's default) where no file sets them."""
    start = {n: env.get(n, "") for n in names}
    start.update({n: v for n, v in _RESET.items() if n in names})
    start.update({k: v for k, v in scope.items() if k in names and v})
    result = bashconf.source_files(layout.framework_confs, names, scope={**scope, **start}, env=env)
    merged = dict(start)
    for name in names:
        if name in result.values:
            merged[name] = result.values[name].get(0, "")
    return merged


@dataclass(frozen=True)
class CacheSettings:
    """``[cache]``: the build cache on this host, and the registry a fleet shares it through."""

    enabled: bool = True
    #: "" = the default place (see Layout.build_cache)
    path: str = ""
    #: bytes; the least recently used entries go first when the cache grows past it
    max_size: int = 2 << 30
    #: "oci://HOST[:PORT]/REPOSITORY", or "" for no registry
    remote: str = ""
    #: push what this host builds (only a host that holds the fleet's signing key should)
    push: bool = False
    #: a container-registry auth file ("" = the standard places)
    registry_auth: str = ""
    #: certificates a pulled module's signature must verify against
    trusted_certificates: tuple[str, ...] = ()
    #: seconds one registry request may take before the module is built locally
    timeout: float = 10.0
    #: use plain HTTP (a registry on a trusted local network); TLS otherwise
    insecure: bool = False
    #: a CA bundle to verify the registry's TLS certificate with ("" = the system's)
    ca_file: str = ""


_SIZE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: object) -> int:
    """A size in bytes, from a whole number or a text like "500M" or "2G"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip().upper().removesuffix("IB").removesuffix("B")
        num, unit = (text[:-1], text[-1]) if text and text[-1] in _SIZE else (text, "")
        try:
            n = float(num)
        except ValueError:
            n = -1
        if n >= 0:
            return int(n * _SIZE[unit])
    raise ValueError("a size in bytes, or a text such as \"500M\" or \"2G\"")


def _cache_settings(path: Path, data: object) -> CacheSettings:
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: [cache] must be a table")
    known = {f for f in CacheSettings.__dataclass_fields__}
    unknown = sorted(set(data) - known - {"max_size"})
    if unknown:
        raise SettingsError(f"{path}: [cache] has no setting {unknown[0]!r}")
    d = CacheSettings()
    try:
        size = parse_size(data.get("max_size", d.max_size))
    except ValueError as e:
        raise SettingsError(f"{path}: [cache] max_size must be {e}") from e
    for name in ("enabled", "push", "insecure"):
        if not isinstance(data.get(name, False), bool):
            raise SettingsError(f"{path}: [cache] {name} must be true or false")
    for name in ("path", "remote", "registry_auth", "ca_file"):
        if not isinstance(data.get(name, ""), str):
            raise SettingsError(f"{path}: [cache] {name} must be a string")
    remote = data.get("remote", "")
    if remote and not re.match(r"^oci://[^/\s]+/[a-z0-9]+([._/-][a-z0-9]+)*$", remote):
        raise SettingsError(f"{path}: [cache] remote must look like oci://HOST[:PORT]/REPOSITORY "
                            f"(a lower-case repository name), not {remote!r}")
    certs = data.get("trusted_certificates", [])
    if not isinstance(certs, list) or not all(isinstance(c, str) for c in certs):
        raise SettingsError(f"{path}: [cache] trusted_certificates must be a list of file names")
    timeout = data.get("timeout", d.timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SettingsError(f"{path}: [cache] timeout must be a number of seconds > 0")
    return CacheSettings(data.get("enabled", True), data.get("path", ""), size, remote, data.get("push", False),
                         data.get("registry_auth", ""), tuple(certs), float(timeout), data.get("insecure", False),
                         data.get("ca_file", ""))


@dataclass(frozen=True)
class HooksSettings:
    """Our own settings, beyond upstream's, from /etc/dkms/dkms-hooks.toml."""

    #: modules whose failure fails a kernel or package transaction
    critical_modules: tuple[str, ...] = ()
    #: initramfs tool: "auto", "none", or a tool name
    initramfs: str = "auto"
    #: job budget for parallel builds; 0 means the CPU count
    jobs: int = 0
    #: a user that make, patches and PRE_BUILD/POST_BUILD run as ("" = as the caller)
    build_user: str = ""
    #: answer kbuild's compiler probes once per transaction of several builds per kernel
    compiler_probe_cache: bool = True
    #: seconds the boot-time catch-up holds the boot; later builds go on in the background
    #: (0: no limit)
    boot_time_limit: int = 120
    cache: CacheSettings = field(default_factory=CacheSettings)
    extra: Mapping[str, object] = field(default_factory=dict)


class SettingsError(Exception):
    pass


def load_hooks_settings(path: Path) -> HooksSettings:
    if not path.exists():
        return HooksSettings()
    try:
        data = compat.load_toml(path.read_text(encoding="utf-8"))
    except ImportError as e:
        raise SettingsError(f"{path}: reading it needs tomli on Python before 3.11 (python3-tomli)") from e
    except (OSError, ValueError) as e:
        raise SettingsError(f"{path}: {e}") from e
    critical = data.get("critical_modules", [])
    if not isinstance(critical, list) or not all(isinstance(x, str) for x in critical):
        raise SettingsError(f"{path}: critical_modules must be a list of module names")
    initramfs = data.get("initramfs", "auto")
    if not isinstance(initramfs, str):
        raise SettingsError(f"{path}: initramfs must be a string")
    jobs = data.get("jobs", 0)
    if not isinstance(jobs, int) or jobs < 0:
        raise SettingsError(f"{path}: jobs must be a whole number >= 0")
    build_user = data.get("build_user", "")
    if not isinstance(build_user, str):
        raise SettingsError(f"{path}: build_user must be a user name")
    probe_cache = data.get("compiler_probe_cache", True)
    if not isinstance(probe_cache, bool):
        raise SettingsError(f"{path}: compiler_probe_cache must be true or false")
    boot_time_limit = data.get("boot_time_limit", 120)
    if not isinstance(boot_time_limit, int) or isinstance(boot_time_limit, bool) or boot_time_limit < 0:
        raise SettingsError(f"{path}: boot_time_limit must be a whole number of seconds >= 0")
    cache = _cache_settings(path, data.get("cache", {}))
    known = ("critical_modules", "initramfs", "jobs", "build_user", "compiler_probe_cache", "boot_time_limit",
             "cache")
    extra = {k: v for k, v in data.items() if k not in known}
    return HooksSettings(tuple(critical), initramfs, jobs, build_user, probe_cache, boot_time_limit, cache, extra)


def nproc(env: Mapping[str, str]) -> str:
    """Upstream asks nproc(1); ask it too (so a pinned nproc is honoured), else the CPU count."""
    if run.which("nproc", env):
        try:
            res = run.run(["nproc"], env=env)
            if res.returncode == 0 and res.stdout.strip():
                return res.stdout.strip()
        except run.ToolMissing:
            pass
    return str(len(os.sched_getaffinity(0)))
