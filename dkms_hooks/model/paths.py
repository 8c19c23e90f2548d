"""Every path dkms-hooks touches is derived here from a few injected roots."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_DKMS_TREE = Path("/var/lib/dkms")
DEFAULT_SOURCE_TREE = Path("/usr/src")
DEFAULT_INSTALL_TREE = Path("/lib/modules")


@dataclass(frozen=True)
class Layout:
    dkms_tree: Path = DEFAULT_DKMS_TREE
    source_tree: Path = DEFAULT_SOURCE_TREE
    install_tree: Path = DEFAULT_INSTALL_TREE
    #: the root that system configuration (/etc/dkms, os-release, /boot, /usr/share/dkms) is read from
    sysroot: Path = Path("/")
    tmp: Path = Path("/tmp")

    def with_trees(self, **kwargs: Path) -> Layout:
        return replace(self, **kwargs)

    # --- system configuration -------------------------------------------------
    @property
    def etc_dkms(self) -> Path:
        return self.sysroot / "etc/dkms"

    @property
    def framework_confs(self) -> list[Path]:
        d = self.etc_dkms / "framework.conf.d"
        extra = sorted(d.glob("*.conf")) if d.is_dir() else []
        return [self.etc_dkms / "framework.conf", *extra]

    @property
    def settings_toml(self) -> Path:
        return self.etc_dkms / "dkms-hooks.toml"

    @property
    def no_autoinstall_flag(self) -> Path:
        return self.etc_dkms / "no-autoinstall"

    @property
    def os_release_candidates(self) -> tuple[Path, Path]:
        return (self.sysroot / "etc/os-release", self.sysroot / "usr/lib/os-release")

    @property
    def ubuntu_mok(self) -> tuple[Path, Path]:
        """Ubuntu's MOK pair (shim-signed's update-secureboot-policy makes it)."""
        d = self.sysroot / "var/lib/shim-signed/mok"
        return d / "MOK.priv", d / "MOK.der"

    @property
    def modules_load_unit(self) -> Path:
        return self.sysroot / "lib/systemd/system/systemd-modules-load.service"

    @property
    def debian_helpers(self) -> tuple[Path, ...]:
        """What Debian's kernel hooks and dh_dkms's postinst call by path; the package lays
        them (make install DISTRO=debian), never dkms itself."""
        return tuple(self.sysroot / "usr/lib/dkms" / name for name in ("dkms_autoinstaller", "common.postinst"))

    @property
    def module_init_tools(self) -> Path:
        return self.sysroot / "etc/sysconfig/module-init-tools"

    @property
    def forced_modules_dir(self) -> Path:
        return self.sysroot / "usr/share/dkms/modules_to_force_install"

    def system_map(self, kver: str) -> Path:
        return self.sysroot / f"boot/System.map-{kver}"

    def conf_overrides(self, module: str, version: str, kver: str, arch: str) -> list[Path]:
        e = self.etc_dkms
        if any("/" in part for part in (module, version, kver, arch)):
            # a hostile name must not make us source a file outside /etc/dkms
            return []
        return [
            e / f"{module}.conf",
            e / f"{module}-{version}.conf",
            e / f"{module}-{version}-{kver}.conf",
            e / f"{module}-{version}-{kver}-{arch}.conf",
            e / f"{module}--{kver}.conf",
            e / f"{module}--{kver}-{arch}.conf",
        ]

    def script_override_dir(self, module: str) -> Path:
        return self.etc_dkms / module

    # --- the dkms tree ----------------------------------------------------------
    def module_dir(self, module: str) -> Path:
        return self.dkms_tree / module

    def version_dir(self, module: str, version: str) -> Path:
        return self.dkms_tree / module / version

    def source_link(self, module: str, version: str) -> Path:
        return self.version_dir(module, version) / "source"

    def build_dir(self, module: str, version: str) -> Path:
        return self.version_dir(module, version) / "build"

    def kernel_dir(self, module: str, version: str, kver: str) -> Path:
        return self.version_dir(module, version) / kver

    def built_dir(self, module: str, version: str, kver: str, arch: str) -> Path:
        return self.version_dir(module, version) / kver / arch

    def active_link(self, module: str, kver: str, arch: str) -> Path:
        return self.module_dir(module) / f"kernel-{kver}-{arch}"

    def original_module_dir(self, module: str, kver: str, arch: str) -> Path:
        return self.module_dir(module) / "original_module" / kver / arch

    @property
    def hooks_state(self) -> Path:
        """dkms-hooks' own state in the tree; a dot name, so upstream's globs skip it."""
        return self.dkms_tree / ".dkms-hooks"

    def saved_conf(self, module: str, version: str) -> Path:
        """A copy of the dkms.conf taken at add time, so a module whose source vanished
        (its package removed first) can still be uninstalled cleanly."""
        return self.hooks_state / "conf" / module / version / "dkms.conf"

    def private_build_dir(self, module: str, version: str, kver: str, arch: str) -> Path:
        """Where one kernel's build runs when several kernels build the same module at once."""
        return self.hooks_state / "build" / module / version / f"{kver}-{arch}"

    def failed_logs(self, module: str, version: str) -> Path:
        return self.hooks_state / "failed" / module / version

    def build_records(self, module: str, version: str) -> Path:
        """The last build result per kernel/arch (``<kver>-<arch>.json``), for status and plan."""
        return self.hooks_state / "builds" / module / version

    def build_cache(self, configured: str = "") -> Path:
        """The build cache: ``[cache] path`` (under the system root), else
        /var/cache/dkms-hooks/builds for the system's dkms tree, and a relocated tree's own
        (``.dkms-hooks/cache``), so a sandbox never shares the system's entries."""
        if configured:
            return self.sysroot / configured.lstrip("/")
        if self.dkms_tree == DEFAULT_DKMS_TREE:
            return self.sysroot / "var/cache/dkms-hooks/builds"
        return self.hooks_state / "cache"

    @property
    def mok_key(self) -> Path:
        return self.dkms_tree / "mok.key"

    @property
    def mok_cert(self) -> Path:
        return self.dkms_tree / "mok.pub"

    @property
    def post_transaction_log(self) -> Path:
        return self.dkms_tree / "post_transaction.log"

    # --- sources and kernels ------------------------------------------------------
    def source_dir(self, module: str, version: str) -> Path:
        return self.source_tree / f"{module}-{version}"

    def kernel_modules_dir(self, kver: str) -> Path:
        return self.install_tree / kver

    def is_relocated_install_tree(self) -> bool:
        return self.install_tree != DEFAULT_INSTALL_TREE
