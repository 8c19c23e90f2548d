"""``dkms status --json``: the same entries as the text, one per line it would print, with
what the text leaves out (module files, signer, last build). The schema is in docs/json.md;
a change that breaks a reader raises ``VERSION``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dkms_hooks.cli.status import entry_conf, warnings
from dkms_hooks.model import installed as files
from dkms_hooks.model import tree
from dkms_hooks.model.context import Context
from dkms_hooks.model.statuscache import StatusCache
from dkms_hooks.ops import buildrecord, secureboot
from dkms_hooks.ops.secureboot import Survey

SCHEMA = "dkms-hooks/status"
VERSION = 1


def modules(ctx: Context, e: tree.Entry, cache: StatusCache, keys: Survey) -> list[dict[str, object]]:
    """The entry's module files: where built and installed, who signed them, and whether the
    installed ones will load in their kernel on this machine."""
    lay = ctx.layout
    conf = entry_conf(ctx, e, cache)
    compression = ctx.kernel(e.kver, e.arch).compression(lay)
    built_dir = lay.built_dir(e.module, e.version, e.kver, e.arch) / "module"
    active = tree.is_active(lay, e.module, e.version, e.kver, e.arch)
    out: list[dict[str, object]] = []
    for m in conf.modules:
        excluded = conf.module_excluded(m.index)
        built = None if excluded else files.compressed_or_uncompressed(built_dir, m.dest_name, compression)
        installed: Path | None = None
        if built is not None and active:
            loc = files.actual_dest_location(ctx, conf.modules[m.index], e.module, e.kver, e.arch, compression)
            if loc is not None:
                installed = files.compressed_or_uncompressed(Path(f"{lay.install_tree}/{e.kver}{loc}"),
                                                               m.dest_name, compression)
        probe = installed or built
        signer = cache.signature(probe) if probe is not None else None
        loads: dict[str, str] | None = None
        if installed is not None:
            verdict = keys.judge(signer, ctx.kernel(e.kver, e.arch))
            loads = {"verdict": verdict.load.value, "why": verdict.why}
        out.append({
            "name": m.dest_name,
            "excluded": excluded,
            "built": os.fspath(built) if built else None,
            "installed": os.fspath(installed) if installed else None,
            "signer": signer.issuer if signer is not None else None,
            "sig_key": signer.key_id if signer is not None else None,
            "loads": loads,
        })
    return out


def _entry(ctx: Context, e: tree.Entry, cache: StatusCache, keys: Survey, kver: str,
           arch: str) -> dict[str, object]:
    d: dict[str, object] = {
        "module": e.module,
        "version": e.version,
        "kernel": e.kver or None,
        "arch": e.arch or None,
        "state": e.state.value,
        "warnings": [],
        "modules": [],
        "signer": None,
    }
    if e.state in (tree.State.built, tree.State.installed):
        with ctx.subshell():
            d["warnings"] = [w.value for w in warnings(ctx, e, cache)]
            mods = modules(ctx, e, cache, keys)
        d["modules"] = mods
        d["signer"] = next((m["signer"] for m in mods if m["signer"]), None)
        record = buildrecord.read(ctx, e.module, e.version, e.kver, e.arch)
    elif kver and arch:
        record = buildrecord.read(ctx, e.module, e.version, kver, arch)
    else:
        record = buildrecord.newest(ctx, e.module, e.version, kver)
    d["last_build"] = record.to_json() if record is not None else {"result": "none"}
    d["log"] = _log(ctx, e, record)
    return d


def _log(ctx: Context, e: tree.Entry, record: buildrecord.BuildRecord | None) -> str | None:
    if e.kver and e.arch:
        made = ctx.layout.built_dir(e.module, e.version, e.kver, e.arch) / "log/make.log"
        if made.is_file() and (record is None or record.result == "ok"):
            return os.fspath(made)
    if record is not None and record.log and os.path.isfile(record.log):
        return record.log
    return None


def document(ctx: Context) -> dict[str, object]:
    o = ctx.options
    cache = StatusCache(ctx)
    keys = survey(ctx)
    entries: list[dict[str, object]] = []
    try:
        targets = list(zip(o.kernels, (*o.arches, *[""] * len(o.kernels)))) or [("", o.arches[0] if o.arches else "")]
        for kver, arch in targets:
            for e in tree.status_entries(ctx.layout, o.module, o.version, kver, arch):
                entries.append(_entry(ctx, e, cache, keys, kver, arch))
    finally:
        cache.save()
    return {"schema": SCHEMA, "version": VERSION, "entries": entries}


def survey(ctx: Context) -> Survey:
    """The Secure Boot state, with the certificate dkms signs with among the known ones."""
    return secureboot.survey(ctx, [secureboot.signing_pair(ctx, None)[1]])


def show_status_json(ctx: Context) -> None:
    ctx.console.print(json.dumps(document(ctx), indent=2))
