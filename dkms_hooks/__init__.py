"""dkms-hooks: a drop-in dkms with distro hooks."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"
#: The upstream release whose interface (messages, exit codes, tree layout) we reproduce.
UPSTREAM_RELEASE = "dkms-3.4.3"

hookimpl = pluggy.HookimplMarker("dkms_hooks")

__all__ = ["UPSTREAM_RELEASE", "__version__", "hookimpl"]
