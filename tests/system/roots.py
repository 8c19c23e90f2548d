"""Scenarios inside a cached Debian root with newer real clients (scripts/make-root): a
throwaway overlay of the root, chrooted into, with this checkout run by the root's own
python3. The cached root itself is never written."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import REPO

from system.overlay_helpers import overlay_supported

ROOTS = Path(os.environ.get("DKMS_HOOKS_ROOTS", "/var/cache/dkms-hooks/roots"))
ROOT_SH = Path(__file__).with_name("root.sh")


def root_ready(name: str) -> bool:
    return overlay_supported() and (ROOTS / name / ".dkms-hooks-root").is_file()


def needs_root(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not root_ready(name), reason=f"needs root and the cached {name} root "
                              f"(scripts/make-root {name})")


def root_kernels(name: str) -> list[str]:
    """The kernels of the root that have headers."""
    mods = ROOTS / name / "usr/lib/modules"
    return sorted(k for k in os.listdir(mods) if (mods / k / "build/include").is_dir()) if mods.is_dir() else []


def in_root(name: str, script: str, *, share: tuple[Path, ...] = (), timeout: int = 900,
            ) -> subprocess.CompletedProcess[str]:
    """Run bash ``script`` (set -euo pipefail) chrooted in a throwaway overlay of root
    ``name``; the ``share`` directories are there at their own paths, writable."""
    with tempfile.TemporaryDirectory(prefix="dkms-hooks-root-script.") as tmp:
        body = Path(tmp, "script.sh")
        body.write_text("set -euo pipefail\n" + script)
        outer = f"""
set -euo pipefail
. {ROOT_SH}
root_up {name} {REPO} {tmp} {' '.join(str(p) for p in share)}
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 bash {body}
"""
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", outer],
                              capture_output=True, text=True, timeout=timeout, check=False)
