"""The plugin manager, built on demand: nothing is loaded at import time."""

from __future__ import annotations

import importlib
import os

import pluggy

from dkms_hooks import hookspecs
from dkms_hooks.adapters import BUILTIN_ADAPTERS

#: built-in plugins, registered in this order: distribution policy, initramfs tools, adapters
BUILTIN_PLUGINS: tuple[str, ...] = ("dkms_hooks.policy", "dkms_hooks.initramfs", *BUILTIN_ADAPTERS)
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
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if os.environ.get("DKMS_HOOKS_TRACE_PLUGINS"):
        pm.trace.root.setwriter(print)
        pm.enable_tracing()
    pm.check_pending()
    return pm
