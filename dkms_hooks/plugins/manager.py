"""The plugin manager, built on demand: nothing is loaded at import time."""

from __future__ import annotations

import importlib
import os
import sys

import pluggy

from dkms_hooks.plugins import hookspecs
from dkms_hooks.plugins.adapters import BUILTIN_ADAPTERS

#: built-in plugins, registered in this order: distribution policy, initramfs tools, adapters
BUILTIN_PLUGINS: tuple[str, ...] = ("dkms_hooks.plugins.policy", "dkms_hooks.plugins.initramfs", *BUILTIN_ADAPTERS)
ENTRY_POINT_GROUP = "dkms_hooks"


def get_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("dkms_hooks")
    pm.add_hookspecs(hookspecs)
    blocked = {n.strip() for n in os.environ.get("DKMS_HOOKS_DISABLE_PLUGINS", "").split(",") if n.strip()}
    for name in BUILTIN_PLUGINS:
        if name in blocked:
            continue
        pm.register(importlib.import_module(name), name=name)
    for name in blocked:
        pm.set_blocked(name)
    if load_entry_points and _declared_on_path(ENTRY_POINT_GROUP):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if os.environ.get("DKMS_HOOKS_TRACE_PLUGINS"):
        pm.trace.root.setwriter(print)
        pm.enable_tracing()
    pm.check_pending()
    return pm


def _declared_on_path(group: str) -> bool:
    """Whether an installed distribution on sys.path declares entry points in ``group``. A
    look at the entry_points.txt files costs a millisecond or two; importing
    importlib.metadata for pluggy's full scan costs 40 ms on every dkms call, so that
    is left for when there is something to load."""
    header = f"[{group}]"
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                metadirs = [d.path for d in it if d.name.endswith((".dist-info", ".egg-info"))]
        except OSError:  # a zip file, a directory that is not there
            continue
        for metadir in metadirs:
            try:
                with open(os.path.join(metadir, "entry_points.txt"), encoding="utf-8", errors="replace") as f:
                    if any(line.strip() == header for line in f):
                        return True
            except OSError:
                continue
    return False
