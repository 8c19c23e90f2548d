"""dkms-hooks: a drop-in dkms with distro hooks."""

from __future__ import annotations

# typing.TYPE_CHECKING without importing typing (4 ms of every command); the type checker
# treats this name as it treats typing's
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import pluggy

    hookimpl: pluggy.HookimplMarker

__version__ = "0.1.0"
#: The upstream release whose interface (messages, exit codes, tree layout) we reproduce.
UPSTREAM_RELEASE = "dkms-3.4.3"


def __getattr__(name: str) -> Any:
    # pluggy is imported only by what uses plugins, not by every `dkms status`
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker("dkms_hooks")
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(name)

__all__ = ["UPSTREAM_RELEASE", "__version__", "hookimpl"]
