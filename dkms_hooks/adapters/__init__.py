"""Built-in adapters: each turns one host's hook calls into engine events."""

from __future__ import annotations

BUILTIN_ADAPTERS: tuple[str, ...] = (
    "dkms_hooks.adapters.kernel_install",
    "dkms_hooks.adapters.apt",
    "dkms_hooks.adapters.pacman",
    "dkms_hooks.adapters.rpm",
    "dkms_hooks.adapters.gentoo",
)


def registration_of(source_dir: str) -> str | None:
    """``name/version`` of a module source directory ``.../<name>-<version>`` that is going
    away (its dkms.conf can no longer be read); the version is what follows the last dash."""
    base = source_dir.rstrip("/").rsplit("/", 1)[-1]
    name, _, version = base.rpartition("-")
    return f"{name}/{version}" if name and version else None
