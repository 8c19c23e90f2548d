from __future__ import annotations

from dkms_hooks.cli import entry

entry()
