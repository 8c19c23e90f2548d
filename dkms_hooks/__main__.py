from __future__ import annotations

from dkms_hooks.cli.main import entry

entry()
