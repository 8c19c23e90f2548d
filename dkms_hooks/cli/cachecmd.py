"""``dkms cache status|prune|clear``: the build cache on this host (ours)."""

from __future__ import annotations

import json
import time

from dkms_hooks.model.context import Context
from dkms_hooks.ops.cache.step import host_cache
from dkms_hooks.ops.cache.store import Entry, HostCache
from dkms_hooks.system.errors import DkmsError

USAGE = "Usage: dkms cache status|prune|clear [--json]"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _describe(entry: Entry) -> dict[str, object]:
    m = entry.manifest
    return {"key": entry.key, "module": m.get("module"), "version": m.get("version"), "kernel": m.get("kernel"),
            "arch": m.get("arch"), "size": entry.size,
            "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.last_used))}


def _status(ctx: Context, cache: HostCache | None) -> int:
    c = ctx.hooks.cache
    where = ctx.layout.build_cache(c.path)
    found = list(cache.entries()) if cache is not None else []
    sizes = {e.key: e.size for e in found}
    entries = [_describe(e) for e in found]
    total = sum(sizes.values())
    if ctx.options.json:
        ctx.console.print(json.dumps({"enabled": c.enabled, "path": str(where), "max_size": c.max_size, "size": total,
                                      "remote": c.remote or None, "push": c.push, "entries": entries}, indent=2))
        return 0
    out = ctx.console.print
    out(f"build cache: {where} ({'on' if c.enabled else 'off: [cache] enabled = false'})")
    out(f"  {len(found)} {'entry' if len(found) == 1 else 'entries'}, {_size(total)} of {_size(c.max_size)}")
    out(f"  registry: {c.remote + (' (push)' if c.push else ' (pull only)') if c.remote else 'none'}")
    for e in sorted(entries, key=lambda e: str(e["last_used"]), reverse=True):
        out(f"  {str(e['key'])[:12]}  {e['module']}/{e['version']}  {e['kernel']} ({e['arch']})  "
            f"{_size(sizes[str(e['key'])])}  used {e['last_used']}")
    return 0


def run_cache(ctx: Context) -> int:
    o = ctx.options
    what = o.positional[0] if o.positional else ""
    if what not in ("status", "prune", "clear") or len(o.positional) > 1:
        raise DkmsError(2, f"Unknown cache action: {what!r}." if what else "No cache action given.", USAGE)
    cache = host_cache(ctx)
    if what == "status":
        return _status(ctx, cache)
    if o.json:
        raise DkmsError(2, f"dkms cache {what} does not support --json.")
    if cache is None:
        ctx.console.print("The build cache is off ([cache] enabled = false): nothing to do.")
        return 0
    if what == "prune":
        gone = cache.prune()
        ctx.console.print(f"Pruned {len(gone)} entries (the least recently used), "
                          f"to fit {_size(cache.max_size)}.")
    else:
        ctx.console.print(f"Removed {cache.clear()} entries from {cache.root}.")
    return 0
