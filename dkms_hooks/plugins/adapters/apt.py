"""Debian and Ubuntu: the /etc/kernel/*.d run-parts hooks, the dpkg file trigger on /usr/src,
module source package scripts, and APT's DPkg::Post-Invoke.

Inside an APT run (apt sets DPKG_FRONTEND_LOCKED for dpkg) work that does not have to
happen at once is queued and done in one go by the Post-Invoke step. A new kernel's modules
are built at once: Debian's initramfs hook runs right after ours and must find them.

As Debian's common.postinst, a module package's source is built only when its dkms.conf
asks for AUTOINSTALL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from dkms_hooks import hookimpl
from dkms_hooks.model.events import Event, Source
from dkms_hooks.model.paths import Layout
from dkms_hooks.plugins.adapters import plain_name

_KERNEL_VERBS = ("kernel-postinst", "headers-postinst", "kernel-preinst", "kernel-prerm")


def _in_apt(env: Mapping[str, str]) -> bool:
    return bool(env.get("DPKG_FRONTEND_LOCKED"))


@hookimpl
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    if source != "apt":
        return None
    verb = argv[0] if argv else ""
    rest = tuple(argv[1:])
    defer = _in_apt(env)
    if verb in _KERNEL_VERBS:
        kver = rest[0] if rest else ""
        if not plain_name(kver):
            return Event(source=source, refused=(f"apt {verb} needs a kernel version, not {kver!r}",))
        if verb == "kernel-postinst":
            return Event(kernels_added=(kver,), source=source, initramfs_follows=True)
        if verb == "headers-postinst":
            return Event(kernels_added=(kver,), source=source, defer=defer)
        if verb == "kernel-preinst":
            return Event(kernels_reinstalling=(kver,), source=source)
        return Event(kernels_removed=(kver,), source=source)
    if verb in ("source-configure", "source-remove"):
        if len(rest) < 2 or not (plain_name(rest[0]) and plain_name(rest[1])):
            return Event(source=source, refused=(f"apt {verb} needs a module NAME and VERSION",))
        nv = (Source.named(rest[0], rest[1]),)
        if verb == "source-configure":
            return Event(sources_added=nv, source=source, defer=defer)
        return Event(sources_removed=nv, source=source)
    if verb == "trigger":
        # which files changed is not said: the engine compares the source tree with the
        # registrations when the work runs (an upgrade both removes and adds)
        return Event(rescan=True, source=source, defer=defer)
    if verb == "post-invoke":
        return Event(flush=True, source=source)
    return Event(source=source, refused=(f"unknown apt hook verb {verb!r}",))
