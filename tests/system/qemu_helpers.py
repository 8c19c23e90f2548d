"""Boot a real kernel image under qemu with a tiny busybox initramfs whose /init runs a
test's shell steps, and keep the serial console as the evidence."""

from __future__ import annotations

import fcntl
import gzip
import lzma
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/usr/bin/busybox")
DONE = "=== INIT DONE"
# what the firmware sends to clear the terminal, noise in a log read by people
_TERMINAL_CODES = re.compile(r"\x1b(?:\[[0-9;?=]*[A-Za-z]|c|[()][0-9A-Za-z])")

_KVM_GET_API_VERSION = 0xAE00
_KVM_API_VERSION = 12
# Seen on nested hosts where /dev/kvm opens fine but cannot run the guest
KVM_BROKEN = ("KVM internal error", "failed to set MSR", "kvm run failed")
# once a KVM guest failed, later boots of the session go straight to TCG
kvm_failed: list[Path] = []

_PRELUDE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# the kernel's own module messages (pr_info and up) go to the console from here on
echo 7 > /proc/sys/kernel/printk
echo "=== INIT kernel $(uname -r) sig_enforce=$(cat /sys/module/module/parameters/sig_enforce)"
"""
_POSTLUDE = f"""
echo "{DONE}"
poweroff -f
"""


def vmlinuz(kver: str) -> Path:
    return Path(f"/boot/vmlinuz-{kver}")


def _is_static_elf(path: Path) -> bool:
    """No PT_INTERP program header: the binary runs in an initramfs without libraries."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff = int.from_bytes(head[0x20:0x28], "little")
        phentsize = int.from_bytes(head[0x36:0x38], "little")
        phnum = int.from_bytes(head[0x38:0x3A], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i : i + 4], "little") != 3 for i in range(0, len(table), phentsize))


def missing_for_boot(kver: str | None) -> str | None:
    """Why a boot of ``kver`` cannot run here, or None when it can."""
    if kver is None:
        return "no 6.12 kernel with headers here"
    if shutil.which(QEMU) is None:
        return f"{QEMU} missing (Debian: qemu-system-x86)"
    if not os.access(vmlinuz(kver), os.R_OK):
        return f"{vmlinuz(kver)} missing or unreadable (Debian: linux-image-{kver})"
    if not (BUSYBOX.is_file() and _is_static_elf(BUSYBOX)):
        return f"{BUSYBOX} missing or not static (Debian: busybox-static)"
    if shutil.which("cpio") is None:
        return "cpio missing"
    return None


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _KVM_GET_API_VERSION) == _KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def plain_module(ko: Path, dest: Path) -> Path:
    """``ko`` decompressed to ``dest`` (a signature survives: it is appended before compression)."""
    data = ko.read_bytes()
    if ko.suffix == ".xz":
        data = lzma.decompress(data)
    elif ko.suffix == ".gz":
        data = gzip.decompress(data)
    elif ko.suffix == ".zst":
        data = subprocess.run(["zstd", "-dc", str(ko)], capture_output=True, check=True).stdout
    elif ko.suffix != ".ko":
        raise ValueError(f"not a kernel module: {ko}")
    dest.write_bytes(data)
    return dest


def pack_initramfs(workdir: Path, steps: str, files: Mapping[str, Path]) -> Path:
    """A gzip'ed newc cpio of static busybox, ``files`` (name in / -> host file) and an
    /init that runs the shell ``steps`` between start and end markers, then powers off."""
    tree = workdir / "initramfs"
    for d in ("bin", "proc", "sys", "dev"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, tree / "bin/busybox")
    for name, src in files.items():
        shutil.copyfile(src, tree / name)
    init = tree / "init"
    init.write_text(_PRELUDE + steps + _POSTLUDE)
    init.chmod(0o755)
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        cwd=tree,
        input=("\n".join(names) + "\n").encode(),
        capture_output=True,
        check=True,
    ).stdout
    out = workdir / "initrd.gz"
    out.write_bytes(gzip.compress(cpio, compresslevel=1))
    return out


@dataclass(frozen=True)
class Boot:
    """A finished boot: the serial console (carriage returns dropped) and where it was saved."""

    log: str
    path: Path
    accel: str
    seconds: float
    returncode: int  # negative: stopped (timeout, broken KVM)

    @property
    def finished(self) -> bool:
        return DONE in self.log

    def tail(self, lines: int = 40) -> str:
        head = f"--- {self.path} ({self.accel}, {self.seconds:.1f} s, qemu exit {self.returncode})"
        return f"{head}, last {lines} lines:\n" + "\n".join(self.log.splitlines()[-lines:])

    def step_rc(self, name: str) -> int | None:
        """The exit status ``step(name, ...)`` recorded, None when the step never ran."""
        m = re.search(rf"=== STEP {re.escape(name)} rc=(\d+)\n", self.log)
        return int(m.group(1)) if m else None

    def section(self, name: str) -> str:
        """What ``section(name, ...)`` printed."""
        m = re.search(rf"=== BEGIN {re.escape(name)}\n(.*?)=== END {re.escape(name)}\n", self.log, re.DOTALL)
        return m.group(1) if m else ""


def step(name: str, command: str) -> str:
    """Shell lines for /init: run ``command`` and record its exit status as ``name``."""
    return f'{command}\necho "=== STEP {name} rc=$?"\n'


def section(name: str, command: str) -> str:
    """Shell lines for /init: print ``command``'s output between markers."""
    return f'echo "=== BEGIN {name}"\n{command}\necho "=== END {name}"\n'


def run_qemu(argv: list[str], log: Path, accel: str, timeout: float) -> Boot:
    """Run qemu (``argv`` without ``-accel``) with its serial console on stdout, saved to
    ``log``, until it powers off or ``timeout`` passes."""
    argv = [argv[0], "-accel", accel, *argv[1:]]
    start = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            # poll the log, so a guest that can never finish (broken KVM) is stopped at once
            while proc.poll() is None and time.monotonic() - start < timeout:
                if accel == "kvm" and any(s.encode() in log.read_bytes() for s in KVM_BROKEN):
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            rc = proc.wait()
    text = _TERMINAL_CODES.sub("", log.read_bytes().decode(errors="replace").replace("\r", ""))
    return Boot(text, log, accel, time.monotonic() - start, rc)


def _run_qemu(kernel: Path, initrd: Path, log: Path, append: str, accel: str, timeout: float) -> Boot:
    argv = [
        QEMU, "-m", "512", "-smp", "1", "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 quiet {append}".strip(),
    ]  # fmt: skip
    return run_qemu(argv, log, accel, timeout)


def boot(kernel: Path, initrd: Path, log: Path, *, append: str = "", timeout: float = 300) -> Boot:
    """Boot ``kernel`` with ``initrd`` on a serial console saved to ``log``: with KVM when
    /dev/kvm works, else (or when the KVM guest does not get to the end) with TCG.
    DKMS_HOOKS_TEST_ACCEL=tcg|kvm skips the guess."""
    forced = os.environ.get("DKMS_HOOKS_TEST_ACCEL", "")
    if forced:
        return _run_qemu(kernel, initrd, log, append, forced, timeout)
    if kvm_usable() and not kvm_failed:
        result = _run_qemu(kernel, initrd, log, append, "kvm", timeout)
        if result.finished:
            return result
        kvm_failed.append(log.rename(log.with_suffix(".kvm" + log.suffix)))
    return _run_qemu(kernel, initrd, log, append, "tcg", timeout)
