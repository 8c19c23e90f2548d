"""Built-in distribution policy, as hook implementations."""

from __future__ import annotations

from dkms_hooks import distro, hookimpl


@hookimpl(trylast=True)
def dkms_dest_module_location(distro: str, declared: str) -> str | None:
    return _location(distro, declared)


def _location(name: str, declared: str) -> str:
    return distro.dest_module_location(name, declared)


@hookimpl(trylast=True)
def dkms_headers_hint(kver: str, distro: str) -> str | None:
    if distro.startswith(("debian", "ubuntu")):
        return f"linux-headers-{kver}"
    if distro.startswith(("fedora", "rhel", "centos")):
        return f"kernel-devel-{kver}"
    if distro.startswith(("suse", "sles", "opensuse")):
        return "kernel-default-devel"
    if distro.startswith("arch"):
        return "the linux-headers package of your kernel"
    if distro.startswith("gentoo"):
        return "sys-kernel/gentoo-kernel or your configured sources"
    return None
