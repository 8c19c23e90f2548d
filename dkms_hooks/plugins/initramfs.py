"""Initramfs generators as plugins: update-initramfs (initramfs-tools), dracut, mkinitcpio,
booster, and systemd's kernel-install for its ``bls`` and ``uki`` layouts (an initrd in
``$BOOT/ENTRY-TOKEN/KVER/``, a unified kernel image in ``$BOOT/EFI/Linux/``), which only
``kernel-install add`` makes again. The engine asks once per kernel per transaction, and
only for kernels where a changed module is inside the current image (or a module asked
with REMAKE_INITRD=yes)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dkms_hooks import hookimpl
from dkms_hooks.model.paths import Layout
from dkms_hooks.system import run

#: set for the ``kernel-install add`` we run: our own plugin steps aside (the modules are in
#: place, and the dkms tree is locked by the run that called it)
REGENERATING = "DKMS_HOOKS_REGENERATING"

#: tool -> where it is installed (relative to the root)
_TOOLS = {
    "update-initramfs": "usr/sbin/update-initramfs",
    "dracut": "usr/bin/dracut",
    "mkinitcpio": "usr/bin/mkinitcpio",
    "booster": "usr/bin/booster",
}


def _read_install_conf(layout: Layout) -> dict[str, str]:
    """kernel-install's install.conf: /etc's wins over /usr/lib's, key by key."""
    values: dict[str, str] = {}
    for conf in (layout.sysroot / "usr/lib/kernel/install.conf", layout.sysroot / "etc/kernel/install.conf"):
        try:
            text = conf.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip().strip("\"'")
    return values


def _entry_token(layout: Layout) -> str:
    for f in (layout.sysroot / "etc/kernel/entry-token", layout.sysroot / "etc/machine-id"):
        try:
            token = f.read_text().strip()
        except OSError:
            continue
        if token and token != "uninitialized":
            return token
    return ""


def _inspect(kver: str, image: Path) -> dict[str, object]:
    """``kernel-install inspect`` as JSON (systemd >= 255); empty where it cannot say."""
    try:
        res = run.run(["kernel-install", "--json=short", "inspect", kver, image], stderr=run.DEVNULL)
    except run.ToolMissing:
        return {}
    try:
        data = json.loads(res.stdout) if res.returncode == 0 else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _kernel_image(kver: str, layout: Layout) -> Path | None:
    for p in (layout.sysroot / f"usr/lib/modules/{kver}/vmlinuz", layout.sysroot / f"boot/vmlinuz-{kver}"):
        if p.is_file():
            return p
    return None


def kernel_install_layout(layout: Layout) -> str:
    """``bls``, ``uki`` or ``other``: what install.conf says, else what kernel-install
    would find ($BOOT/ENTRY-TOKEN or loader/entries.srel make it bls)."""
    configured = _read_install_conf(layout).get("layout", "")
    if configured:
        return configured
    token = _entry_token(layout)
    for boot in _boot_roots(layout):
        if (token and (boot / token).is_dir()) or (boot / "loader/entries.srel").is_file():
            return "bls"
    return "other"


def _boot_roots(layout: Layout) -> list[Path]:
    return [layout.sysroot / d for d in ("efi", "boot", "boot/efi")]


def _entry_images(kver: str, layout: Layout) -> list[Path]:
    """This kernel's UKI and BLS initrds, wherever kernel-install put them."""
    token = ""
    roots = _boot_roots(layout)
    image = _kernel_image(kver, layout)
    if layout.sysroot == Path("/") and image is not None:
        data = _inspect(kver, image)
        if isinstance(data.get("BootRoot"), str):
            roots = [Path(str(data["BootRoot"]))]
        token = str(data.get("EntryToken") or "")
    token = token or _entry_token(layout)
    found: list[Path] = []
    for boot in roots:
        if token:
            found += sorted((boot / "EFI/Linux").glob(f"{token}-{kver}.efi"))
            found += sorted((boot / "EFI/Linux").glob(f"{token}-{kver}+*.efi"))
            found += [p for p in [boot / token / kver / "initrd"] if p.is_file()]
        found += sorted((boot / "EFI/Linux").glob(f"*-{kver}.efi"))
    return list(dict.fromkeys(found))


def _image(tool: str, kver: str, layout: Layout) -> Path | None:
    if tool == "kernel-install":
        images = _entry_images(kver, layout)
        return images[0] if images else None
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
    if os.access(layout.sysroot / "usr/bin/kernel-install", os.X_OK) and kernel_install_layout(layout) in ("bls",
                                                                                                         "uki"):
        return "kernel-install"
    for tool, path in _TOOLS.items():
        if os.access(layout.sysroot / path, os.X_OK):
            return tool
    return "none"


def _listing(tool: str, image: Path) -> list[str] | None:
    if tool == "kernel-install":
        return _entry_listing(image)
    lister = {"update-initramfs": ["lsinitramfs"], "dracut": ["lsinitrd"], "mkinitcpio": ["lsinitcpio"],
              "booster": ["booster", "ls"]}.get(tool)
    if not lister or not run.which(lister[0]):
        return None
    res = run.run([*lister, image], stderr=run.DEVNULL)
    return res.stdout.splitlines() if res.returncode == 0 else None


def _entry_listing(image: Path) -> list[str] | None:
    """The files in a BLS initrd, or in the ``.initrd`` section of a UKI, with whichever
    lister is here (any of them reads a cpio archive made by any generator)."""
    lister = next((cmd for cmd in (["lsinitrd"], ["lsinitramfs"]) if run.which(cmd[0])), None)
    if lister is None:
        return None
    with tempfile.TemporaryDirectory(prefix="dkms-hooks-uki.") as tmp:
        initrd = image
        if image.suffix == ".efi":
            initrd = Path(tmp, "initrd")
            if not run.which("objcopy") or run.run(["objcopy", "-O", "binary", "--only-section=.initrd", image,
                                                     initrd], stderr=run.DEVNULL).returncode != 0:
                return None
            if not initrd.is_file() or initrd.stat().st_size == 0:
                return None
        res = run.run([*lister, initrd], stderr=run.DEVNULL)
        return res.stdout.splitlines() if res.returncode == 0 else None


def _configured(tool: str, layout: Layout) -> set[str]:
    """Modules the generator's configuration asks for by name."""
    root = layout.sysroot
    names: set[str] = set()
    if tool == "kernel-install":
        # whichever generator kernel-install runs reads its own configuration
        return set().union(*(_configured(t, layout) for t in ("update-initramfs", "dracut", "mkinitcpio")))
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
    elif tool == "kernel-install":
        # the only way to remake a BLS initrd or a UKI: add the kernel again, which keeps its entry
        kernel = _kernel_image(kver, layout)
        if kernel is None or layout.sysroot != Path("/"):
            return False
        argv = ["kernel-install", "add", kver, os.fspath(kernel)]
    else:
        return None
    try:
        return run.run(argv, stdout=run.DEVNULL, stderr=run.DEVNULL,
                       env={**os.environ, REGENERATING: "1"}).returncode == 0
    except run.ToolMissing:
        return False
