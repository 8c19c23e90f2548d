"""Settings: upstream's framework.conf (bash, read as upstream reads it) and our own TOML.

framework.conf and framework.conf.d/*.conf are sourced by bash and only upstream's known
variables are taken back, so a file that defines functions or other variables changes
nothing. Variables upstream never resets at start-up also come from the environment."""

from __future__ import annotations

import os
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
    known = ("critical_modules", "initramfs", "jobs", "build_user", "compiler_probe_cache", "boot_time_limit")
    extra = {k: v for k, v in data.items() if k not in known}
    return HooksSettings(tuple(critical), initramfs, jobs, build_user, probe_cache, boot_time_limit, extra)


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
