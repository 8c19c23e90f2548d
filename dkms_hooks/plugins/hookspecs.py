"""The plugin contract: every hook dkms-hooks calls, grouped by the phase that calls it.

Adapters (kernel-install, pacman, APT, RPM, Gentoo) and third-party plugins implement
these with ``@dkms_hooks.hookimpl``. Hooks marked firstresult stop at the first plugin
that returns something other than None; return None to decline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

import pluggy

if TYPE_CHECKING:
    from dkms_hooks.model.events import Event
    from dkms_hooks.model.paths import Layout

_spec = pluggy.HookspecMarker("dkms_hooks")


# --- events: turning a host's call into work ------------------------------------------
@_spec(firstresult=True)
def dkms_parse_event(source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO,
                     layout: Layout) -> Event | None:
    """Called when a host hook runs ``dkms event SOURCE ...``.

    :param source: the host that called (``kernel-install``, ``pacman``, ``apt``...).
    :param argv: the arguments the host passed to its hook.
    :param env: the hook's environment.
    :param stdin: the hook's standard input; read it only if the host writes there
        (pacman's NeedsTargets, RPM's file triggers), or the read may never end.
    :param layout: the trees, for adapters that rescan them (dpkg's file trigger).
    :returns: the event, or None when ``source`` is not this plugin's host.

    Stops at first non-None result.

    Use in adapters: parse only; never build or install here.
    """


# --- install: distribution policy --------------------------------------------------------
@_spec(firstresult=True)
def dkms_dest_module_location(distro: str, declared: str) -> str | None:
    """Where this distribution installs DKMS modules, overriding DEST_MODULE_LOCATION.

    :param distro: the distribution family from os-release (``debian``, ``fedora``...).
    :param declared: DEST_MODULE_LOCATION as the dkms.conf wrote it.
    :returns: a location starting with ``/``, or None to leave the decision to others.

    Stops at first non-None result.
    """


@_spec(firstresult=True)
def dkms_signing_key(distro: str, kver: str, layout: Layout) -> tuple[str, str] | None:
    """The module signing key and certificate to use when framework.conf names none.

    :returns: (key, certificate) paths (the key may be a ``pkcs11:`` URI), or None to
        fall back to the MOK pair in the dkms tree.

    Stops at first non-None result.
    """


@_spec
def dkms_module_installed(module: str, version: str, kver: str, arch: str, layout: Layout) -> None:
    """Called after a module was installed for a kernel (before depmod of the batch).

    Use in adapters: note the kernel for a later initramfs regeneration.
    """


@_spec
def dkms_module_removed(module: str, version: str, kver: str, arch: str, layout: Layout) -> None:
    """Called after a module was uninstalled from a kernel."""


@_spec(firstresult=True)
def dkms_headers_hint(kver: str, distro: str) -> str | None:
    """The package that provides headers for ``kver`` on this distribution, for the hint
    printed when they are missing.

    Stops at first non-None result.
    """


# --- initramfs ---------------------------------------------------------------------------
@_spec(firstresult=True)
def dkms_initramfs_tool(layout: Layout, configured: str) -> str | None:
    """Which initramfs generator this host uses (``update-initramfs``, ``dracut``,
    ``mkinitcpio``, ``booster``), or ``none``.

    :param configured: the ``initramfs`` setting of dkms-hooks.toml (``auto`` to detect).

    Stops at first non-None result.
    """


@_spec(firstresult=True)
def dkms_initramfs_contains(tool: str, kver: str, names: Sequence[str], layout: Layout) -> bool | None:
    """Whether the current initramfs of ``kver`` contains one of the modules ``names``.

    :returns: True or False, or None when this plugin cannot tell.

    Stops at first non-None result.
    """


@_spec(firstresult=True)
def dkms_regenerate_initramfs(tool: str, kver: str, layout: Layout) -> bool | None:
    """Regenerate the initramfs of ``kver``, called at most once per kernel per transaction.

    :returns: True when it succeeded, False when it failed, None to decline.

    Stops at first non-None result.
    """
