"""Refuse to install a module built for another kernel.

The kernel release a module was built against opens its vermagic ("6.1.0-56-amd64 SMP
preempt mod_unload modversions"); a module put in the wrong built directory (a loaded
tarball, a MAKE that copies a prebuilt file) would otherwise be installed and fail to load."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dkms_hooks.model import modinfo
from dkms_hooks.system.errors import DkmsError

#: upstream's exit code for a failed install
EXIT_INSTALL = 6


def built_for(path: Path) -> str:
    """The kernel release in the module's vermagic, or "" when it has none."""
    vermagic = modinfo.first(modinfo.modinfo(path), "vermagic")
    return vermagic.split(" ", 1)[0]


def refuse_foreign(modules: Iterable[Path | None], kver: str) -> None:
    """Raise unless every module was built for ``kver``; checked before anything is written."""
    for path in modules:
        if path is None:
            continue
        release = built_for(path)
        if not release:
            raise DkmsError(EXIT_INSTALL,
                            f"{path} has no vermagic: it is not a kernel module; not installing it.")
        if release != kver:
            raise DkmsError(EXIT_INSTALL, f"{path} was built for kernel {release}, not {kver} (vermagic); "
                                          "not installing it.")
