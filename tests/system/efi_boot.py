"""Boot Debian's signed kernel the way a Secure Boot machine does: OVMF with Microsoft's keys
and Secure Boot on, Debian's signed shim, Debian's signed grub, then the kernel and a tiny
busybox initramfs (from ``system.qemu_helpers``) whose /init runs a test's steps.

Why not qemu's ``-kernel``: that skips the firmware, so the kernel never sees Secure Boot,
is not locked down, and never gets shim's MokList; only this chain puts a Machine Owner Key
(MOK) into the kernel's ``.machine`` keyring, the key a module signed for such a machine
must be signed with. The MOK goes into a copy of the firmware's variable store before the
boot (``virt-fw-vars --add-mok``), so no MokManager screen has to be answered.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from system.qemu_helpers import QEMU, Boot, kvm_failed, kvm_usable, missing_for_boot, plain_module, run_qemu

OVMF_DIR = Path("/usr/share/OVMF")
# the 4M Secure Boot build (needs SMM) and its template with Microsoft's KEK and db enrolled
# and Secure Boot enabled: Microsoft's UEFI CA signed shim, as on real hardware
OVMF_CODE = OVMF_DIR / "OVMF_CODE_4M.ms.fd"
OVMF_VARS = OVMF_DIR / "OVMF_VARS_4M.ms.fd"
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
# Debian's signed grub is built with prefix /EFI/debian (the string is in its image) and
# reads $prefix/grub.cfg; shim loads grubx64.efi from its own directory
GRUB_CFG_DIR = "EFI/debian"
# shim's own vendor GUID, the owner it gives the entries it writes to MokList
SHIM_OWNER_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"

_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}  # our image's geometry is not a floppy's
# a KVM without SMM (seen nested) may run plain boots but never this firmware, so a failure here is
# kept apart from qemu_helpers' verdict (which this module still honours)
_efi_kvm_failed: list[Path] = []

# Shell lines for /init (before the steps): qemu_helpers' prelude mounts proc, sys and dev
# only; lockdown is read from securityfs and the firmware's variables from efivarfs, which
# Debian builds as a module (signed by Debian's build key: it loads while locked down)
MOUNT_EFI = """mount -t securityfs securityfs /sys/kernel/security
[ -f /efivarfs.ko ] && insmod /efivarfs.ko
mount -t efivarfs efivarfs /sys/firmware/efi/efivars
"""


def efi_files(kver: str, workdir: Path) -> dict[str, Path]:
    """Files for ``pack_initramfs`` that ``MOUNT_EFI`` uses: ``kver``'s efivarfs module,
    decompressed into ``workdir`` (none when the kernel has efivarfs built in)."""
    found = sorted(Path(f"/lib/modules/{kver}/kernel/fs/efivarfs").glob("efivarfs.ko*"))
    if not found:
        return {}
    workdir.mkdir(parents=True, exist_ok=True)
    return {"efivarfs.ko": plain_module(found[0], workdir / "efivarfs.ko")}


def shim_owner_guid() -> str:
    """The owner GUID to give ``virt-fw-vars --add-mok``."""
    return SHIM_OWNER_GUID


def _virt_fw_vars() -> list[str] | None:
    if importlib.util.find_spec("virt.firmware.vars") is not None:
        return [sys.executable, "-m", "virt.firmware.vars"]
    found = shutil.which("virt-fw-vars")
    return [found] if found else None


def missing_for_efi_boot(kver: str | None) -> str | None:
    """Why a Secure Boot boot of ``kver`` cannot run here (naming what to install), or None."""
    why = missing_for_boot(kver)
    if why is not None:
        return why
    for path, package in (
        (OVMF_CODE, "ovmf"),
        (OVMF_VARS, "ovmf"),
        (SHIM, "shim-signed"),
        (GRUB, "grub-efi-amd64-signed"),
    ):
        if not os.access(path, os.R_OK):
            return f"{path} missing (Debian: {package})"
    if shutil.which("mkfs.vfat") is None:
        return "mkfs.vfat missing (Debian: dosfstools)"
    if shutil.which("mcopy") is None or shutil.which("mmd") is None:
        return "mcopy/mmd missing (Debian: mtools)"
    if _virt_fw_vars() is None:
        return "virt-fw-vars missing (PyPI: virt-firmware)"
    return None


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    full_env = None if env is None else {**os.environ, **env}
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=full_env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def grub_cfg(cmdline: str) -> str:
    """No menu and no wait: grub runs the commands as it reads them. Paths are on grub's
    root, the disk it found its prefix on: the ESP, the only disk. Under Secure Boot grub
    has shim verify the kernel (Debian's signature); the initrd is not checked."""
    return f"linux /vmlinuz {cmdline}\ninitrd /initrd.gz\nboot\n"


def build_esp(workdir: Path, kernel: Path, initrd: Path, cmdline: str) -> Path:
    """A FAT image (made without mounting anything) laid out as a removable disk's ESP:
    shim as the default loader \\EFI\\BOOT\\BOOTX64.EFI, grub beside it, grub.cfg at grub's
    prefix, the kernel and initrd at the root."""
    cfg = workdir / "grub.cfg"
    cfg.write_text(grub_cfg(cmdline))
    files = {
        "EFI/BOOT/BOOTX64.EFI": SHIM,
        "EFI/BOOT/grubx64.efi": GRUB,
        f"{GRUB_CFG_DIR}/grub.cfg": cfg,
        "vmlinuz": kernel,
        "initrd.gz": initrd,
    }
    size_kib = sum(p.stat().st_size for p in files.values()) // 1024 + 8 * 1024
    image = workdir / "esp.img"
    image.unlink(missing_ok=True)
    _run(["mkfs.vfat", "-C", "-n", "ESP", str(image), str(max(size_kib, 40 * 1024))])
    dirs = sorted({str(Path(name).parent) for name in files} | {"EFI"}, key=len)
    _run(["mmd", "-i", str(image), *(f"::/{d}" for d in dirs if d != ".")], _MTOOLS_ENV)
    for name, src in files.items():
        _run(["mcopy", "-i", str(image), str(src), f"::/{name}"], _MTOOLS_ENV)
    return image


def secure_vars(workdir: Path, mok_der: Path | None) -> Path:
    """A writable copy of the enrolled variable store (the firmware and shim write to it
    during a boot), with ``mok_der`` added to shim's MokList when given."""
    out = workdir / "OVMF_VARS.fd"
    out.unlink(missing_ok=True)
    if mok_der is None:
        shutil.copyfile(OVMF_VARS, out)
        return out
    tool = _virt_fw_vars()
    if tool is None:
        raise RuntimeError("virt-fw-vars missing (PyPI: virt-firmware)")
    _run([*tool, "--input", str(OVMF_VARS), "--output", str(out), "--add-mok", SHIM_OWNER_GUID, str(mok_der)])
    return out


def _qemu_argv(esp: Path, vars_fd: Path) -> list[str]:
    return [
        QEMU, "-m", "1024", "-smp", "1",
        # the Secure Boot build of OVMF keeps its variables behind SMM: without SMM it hangs
        # before printing anything; a secure flash lets only SMM write the variables, as on
        # real hardware, so the guest cannot turn Secure Boot off behind the firmware's back
        "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
        # virtio-blk, not IDE: an IDE disk cannot be read-only
        "-drive", f"if=none,id=esp,format=raw,readonly=on,file={esp}", "-device", "virtio-blk-pci,drive=esp",
        "-nographic", "-no-reboot", "-nic", "none",
    ]  # fmt: skip


def efi_boot(
    kernel: Path,
    initrd: Path,
    workdir: Path,
    log: Path,
    *,
    mok_der: Path | None,
    append: str = "",
    timeout: float = 300,
) -> Boot:
    """Boot the signed ``kernel`` with ``initrd`` (from ``pack_initramfs``) through
    OVMF (Secure Boot on) -> shim -> grub, with the DER certificate ``mok_der`` in shim's
    MokList (none when None); the serial console is saved to ``log``. KVM when /dev/kvm
    works, else (or when the KVM guest does not get to the end) TCG, as
    ``qemu_helpers.boot``; DKMS_HOOKS_TEST_ACCEL=tcg|kvm skips the guess."""
    workdir.mkdir(parents=True, exist_ok=True)
    esp = build_esp(workdir, kernel, initrd, f"console=ttyS0 panic=-1 quiet {append}".strip())

    def attempt(accel: str) -> Boot:
        # each attempt from the template: a boot writes boot entries and SbatLevel
        return run_qemu(_qemu_argv(esp, secure_vars(workdir, mok_der)), log, accel, timeout)

    forced = os.environ.get("DKMS_HOOKS_TEST_ACCEL", "")
    if forced:
        return attempt(forced)
    if kvm_usable() and not kvm_failed and not _efi_kvm_failed:
        result = attempt("kvm")
        if result.finished:
            return result
        _efi_kvm_failed.append(log.rename(log.with_suffix(".kvm" + log.suffix)))
    return attempt("tcg")
