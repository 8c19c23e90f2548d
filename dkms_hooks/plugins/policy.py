"""Built-in distribution policy, as hook implementations. Plain dkms verbs call these
functions directly (building the plugin manager costs more than most verbs); events ask
through the plugin manager, where third-party plugins come first."""

from __future__ import annotations

from dkms_hooks import hookimpl
from dkms_hooks.model import distro
from dkms_hooks.model.paths import Layout


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


@hookimpl(trylast=True)
def dkms_signing_key(distro: str, kver: str, layout: Layout) -> tuple[str, str] | None:  # noqa: F811
    # Fedora's akmods keeps a signing pair that Fedora's own dkms uses as well
    if distro.startswith(("fedora", "rhel", "centos")):
        key = layout.sysroot / "etc/pki/akmods/private/private_key.priv"
        cert = layout.sysroot / "etc/pki/akmods/certs/public_key.der"
        if key.is_file() and cert.is_file():
            return str(key), str(cert)
    return None
