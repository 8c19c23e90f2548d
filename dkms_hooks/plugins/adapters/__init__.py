"""Built-in adapters: each turns one host's hook calls into engine events."""

from __future__ import annotations

BUILTIN_ADAPTERS: tuple[str, ...] = (
    "dkms_hooks.plugins.adapters.kernel_install",
    "dkms_hooks.plugins.adapters.apt",
    "dkms_hooks.plugins.adapters.pacman",
    "dkms_hooks.plugins.adapters.rpm",
    "dkms_hooks.plugins.adapters.gentoo",
    "dkms_hooks.plugins.adapters.boot",
)


def plain_name(name: str) -> bool:
    """A single path component that names something (not ``.``, ``..`` or empty)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name
