"""Which distribution family we run on, read from os-release as upstream does."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from dkms_hooks.model.paths import Layout
from dkms_hooks.system.errors import DkmsError


def _parse_os_release(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw, comments=False)
        except ValueError:
            words = [raw]
        values[key.strip()] = " ".join(words)
    return values


def running_distribution(layout: Layout) -> str:
    """Upstream's distro_version: ``ubuntu`` for Ubuntu, else ID_LIKE as a whole (first
    "word" of a bash scalar is the whole string), else ID."""
    for path in layout.os_release_candidates:
        if path.exists():
            values = _parse_os_release(path)
            if values.get("ID") == "ubuntu":
                return "ubuntu"
            if "ID_LIKE" in values:
                return values["ID_LIKE"]
            return values.get("ID", "")
    raise DkmsError(4, "System is missing os-release file.")


def dest_module_location(distro: str, declared: str, addon_modules_dir: str = "") -> str:
    """Where this distribution wants DKMS modules, whatever DEST_MODULE_LOCATION says."""
    if addon_modules_dir:
        return "/" + addon_modules_dir
    if distro.startswith(("fedora", "centos", "rhel")):
        return "/extra"
    if distro.startswith(("sles", "suse", "opensuse")):
        return "/updates"
    if distro.startswith(("debian", "ubuntu", "arch")):
        return "/updates/dkms"
    return declared


def is_rpm_family(distro: str) -> bool:
    return not distro.startswith(("debian", "ubuntu", "arch", "gentoo"))


def machine_arch() -> str:
    return os.uname().machine
