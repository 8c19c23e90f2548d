"""Built-in distribution policy, as hook implementations."""

from __future__ import annotations

from dkms_hooks import distro, hookimpl


@hookimpl(trylast=True)
def dkms_dest_module_location(distro: str, declared: str) -> str | None:
    return _location(distro, declared)


def _location(name: str, declared: str) -> str:
    return distro.dest_module_location(name, declared)
