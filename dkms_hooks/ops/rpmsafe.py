"""--rpm_safe_upgrade: during an RPM upgrade the old package's %preun runs ``dkms remove``
after the new package's %post ran ``dkms add``; a lock file keyed on the RPM process
lets that remove see it must not undo the add."""

from __future__ import annotations

import os
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.system import run


def _rpm_pid() -> str:
    # our parent is the scriptlet shell; its parent is rpm
    try:
        for line in Path(f"/proc/{os.getppid()}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return line.split()[1]
    except OSError:
        pass
    return ""


def _start_time(pid: str) -> str:
    if not pid:
        return ""
    res = run.run(["ps", "-o", "lstart", "--no-headers", "-p", pid], stderr=run.DEVNULL)
    return res.stdout.strip()


def write_lock(ctx: Context, module: str, version: str) -> None:
    pid = _rpm_pid()
    import tempfile  # lazy: start-up speed (only rpm's scriptlets get here)

    fd, _name = tempfile.mkstemp(prefix=f"dkms_rpm_safe_upgrade_lock.{pid}.", dir=ctx.layout.tmp)
    with os.fdopen(fd, "w") as f:
        f.write(f"{module}-{version}\n")
        stamp = _start_time(pid)
        if stamp:
            f.write(stamp + "\n")


def upgrade_in_progress(ctx: Context, module: str, version: str) -> bool:
    pid = _rpm_pid()
    stamp = _start_time(pid)
    for lock in sorted(ctx.layout.tmp.glob(f"dkms_rpm_safe_upgrade_lock.{pid}.*")):
        try:
            lines = lock.read_text().splitlines()
        except OSError:
            continue
        if lines and lines[0] == f"{module}-{version}" and stamp and lines[-1] == stamp:
            lock.unlink(missing_ok=True)
            ctx.console.warn("Remove cancelled because --rpm_safe_upgrade scenario detected.")
            return True
    return False
