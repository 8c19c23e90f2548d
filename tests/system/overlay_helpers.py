"""Scenarios on this machine's real system paths, inside a throwaway overlay (root only):
every write vanishes when the scenario ends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

OVERLAY = Path(__file__).with_name("overlay.sh")


def overlay_supported() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and "overlay" in Path(
        "/proc/filesystems").read_text()


needs_overlay = pytest.mark.skipif(not overlay_supported(), reason="needs root and overlayfs")


def in_overlay(script: str, *, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run bash ``script`` inside a private mount namespace with the overlay up and this
    checkout installed as /usr/bin/dkms and /usr/sbin/dkms."""
    prelude = f"""
set -euo pipefail
. {OVERLAY}
overlay_up
for d in /usr/bin /usr/sbin; do
    printf '#!/bin/sh\\nPYTHONPATH={REPO} exec {sys.executable} -m dkms_hooks "$@"\\n' > $d/dkms
    chmod +x $d/dkms
done
rm -rf /var/lib/dkms
"""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", prelude + script],
                          capture_output=True, text=True, timeout=timeout)
