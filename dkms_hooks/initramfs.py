"""Initramfs generators as plugins: update-initramfs (initramfs-tools), dracut, mkinitcpio,
booster. The engine asks once per kernel per transaction, and only for kernels where a
changed module is inside the current image (or a module asked with REMAKE_INITRD=yes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dkms_hooks import hookimpl, run
from dkms_hooks.paths import Layout

#: tool -> where it is installed (relative to the root)
_TOOLS = {
    "update-initramfs": "usr/sbin/update-initramfs",
    "dracut": "usr/bin/dracut",
    "mkinitcpio": "usr/bin/mkinitcpio",
    "booster": "usr/bin/booster",
}


def _image(tool: str, kver: str, layout: Layout) -> Path | None:
    boot = layout.sysroot / "boot"
    candidates = {
        "update-initramfs": [boot / f"initrd.img-{kver}"],
        "dracut": [boot / f"initramfs-{kver}.img", boot / f"initrd.img-{kver}"],
        "mkinitcpio": [boot / f"initramfs-{kver}.img", *sorted(boot.glob("initramfs-*.img"))],
        "booster": [boot / f"booster-{kver}.img", *sorted(boot.glob("booster-*.img"))],
    }.get(tool, [])
    return next((p for p in candidates if p.is_file()), None)


@hookimpl(trylast=True)
def dkms_initramfs_tool(layout: Layout, configured: str) -> str | None:
    if configured and configured != "auto":
        return configured
    for tool, path in _TOOLS.items():
        if os.access(layout.sysroot / path, os.X_OK):
            return tool
    return "none"


def _listing(tool: str, image: Path) -> list[str] | None:
    lister = {"update-initramfs": ["lsinitramfs"], "dracut": ["lsinitrd"], "mkinitcpio": ["lsinitcpio"],
              "booster": ["booster", "ls"]}.get(tool)
    if not lister or not run.which(lister[0]):
        return None
    res = run.run([*lister, image], stderr=run.DEVNULL)
    return res.stdout.splitlines() if res.returncode == 0 else None


def _configured(tool: str, layout: Layout) -> set[str]:
    """Modules the generator's configuration asks for by name."""
    root = layout.sysroot
    names: set[str] = set()
    if tool == "update-initramfs":
        for f in [root / "etc/initramfs-tools/modules", *sorted((root / "usr/share/initramfs-tools/modules.d").glob("*")),
                  *sorted((root / "etc/initramfs-tools/modules.d").glob("*"))]:
            if f.is_file():
                for line in f.read_text(errors="replace").splitlines():
                    words = line.split("#", 1)[0].split()
                    if words:
                        names.add(words[0])
    elif tool == "dracut":
        for f in [root / "etc/dracut.conf", *sorted((root / "etc/dracut.conf.d").glob("*.conf")),
                  *sorted((root / "usr/lib/dracut/dracut.conf.d").glob("*.conf"))]:
            if not f.is_file():
                continue
            for line in f.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip().rstrip("+") in ("add_drivers", "force_drivers"):
                    names.update(value.strip().strip("\"'").split())
    elif tool == "mkinitcpio":
        conf = root / "etc/mkinitcpio.conf"
        if conf.is_file():
            for line in conf.read_text(errors="replace").splitlines():
                if line.startswith("MODULES="):
                    names.update(line.split("=", 1)[1].strip("()\"' ").split())
    return {n.replace("-", "_") for n in names}


@hookimpl(trylast=True)
def dkms_initramfs_contains(tool: str, kver: str, names: Sequence[str], layout: Layout) -> bool | None:
    image = _image(tool, kver, layout)
    if image is None:
        return False  # no image yet: whoever makes it will find the modules in place
    if {n.replace("-", "_") for n in names} & _configured(tool, layout):
        return True
    listing = _listing(tool, image)
    if listing is None:
        return True  # cannot look inside: regenerating is the safe side
    wanted = set(names)
    for entry in listing:
        base = entry.rsplit("/", 1)[-1]
        if ".ko" in base and base.split(".ko", 1)[0] in wanted:
            return True
    return False


@hookimpl(trylast=True)
def dkms_regenerate_initramfs(tool: str, kver: str, layout: Layout) -> bool | None:
    image = _image(tool, kver, layout)
    if tool == "update-initramfs":
        argv = ["update-initramfs", "-u" if image else "-c", "-k", kver]
        if layout.sysroot != Path("/"):
            argv += ["-b", os.fspath(layout.sysroot / "boot")]
    elif tool == "dracut":
        argv = ["dracut", "--force", "--kver", kver] + ([os.fspath(image)] if image else [])
    elif tool == "mkinitcpio":
        argv = ["mkinitcpio", "-P"]
    elif tool == "booster":
        argv = ["booster", "build", "--force", "--kernel-version", kver,
                os.fspath(image or layout.sysroot / f"boot/booster-{kver}.img")]
    else:
        return None
    try:
        return run.run(argv, stdout=run.DEVNULL, stderr=run.DEVNULL).returncode == 0
    except run.ToolMissing:
        return False
