"""``dkms plan``'s output: upstream-style text or a JSON document (docs/json.md), and the
exit code, from the items transaction/plan.py works out."""

from __future__ import annotations

import json
from pathlib import Path

from dkms_hooks.cli import statusjson
from dkms_hooks.model import tree
from dkms_hooks.model.context import Context
from dkms_hooks.model.secureboot import Load
from dkms_hooks.model.secureboot import Verdict as LoadVerdict
from dkms_hooks.model.statuscache import StatusCache
from dkms_hooks.ops import secureboot, signing
from dkms_hooks.ops.secureboot import Survey
from dkms_hooks.system import progress
from dkms_hooks.system.errors import DkmsError
from dkms_hooks.transaction import scratch
from dkms_hooks.transaction.plan import Item, KernelInfo, Verdict, plan_kernel

SCHEMA = "dkms-hooks/plan"
VERSION = 1

#: exit codes: something that should build is blocked; a scratch build failed (--build)
EXIT_BLOCKED = 1
EXIT_BUILD_FAILED = 10


_KIND = {Verdict.skip: "skipped", Verdict.blocked: "failed"}


def _text(ctx: Context, kernels: list[KernelInfo], items: list[Item], keys: Survey | None,
          installed: dict[int, list[dict[str, object]]]) -> None:
    out = ctx.console.print
    colour = progress.colour_enabled(ctx.console.out, ctx.env)
    for k in kernels:
        if k.headers:
            out(f"Plan for kernel {k.kernel} ({k.arch}), headers at {k.headers}:")
        else:
            hint = f" (install {k.package})" if k.package else ""
            out(f"Plan for kernel {k.kernel} ({k.arch}), no headers{hint}:")
        if keys is not None:
            sign = _signing(ctx, keys, k)
            loads = sign["loads"]
            verdict = f"{loads['verdict']} ({loads['why']})" if isinstance(loads, dict) else "unknown"
            if sign["unsigned"]:
                out(f"  new builds are not signed ({sign['unsigned']}): they load: {verdict}")
            else:
                out(f"  signing with {sign['certificate']}: new builds load: {verdict}")
        mine = [(n, i) for n, i in enumerate(items) if (i.kernel, i.arch) == (k.kernel, k.arch)]
        if not mine:
            out("  no modules")
        for n, i in mine:
            word = progress.paint(i.verdict.value, _KIND.get(i.verdict, "ok"), colour)
            line = f"  {word}{' ' * (12 - len(i.verdict.value))}{i.module}/{i.version}"
            if i.reasons:
                line += ": " + "; ".join(r.message for r in i.reasons)
            if not i.required:
                line += " [not counted: " + ("not AUTOINSTALL" if i.newest else "older version") + "]"
            out(line)
            if i.build is not None:
                b = i.build
                if b["result"] == "ok":
                    out(f"    scratch build: ok ({b['seconds']}s)")
                else:
                    out(f"    scratch build: {b['result']} (exit {b['exit']}: {b['message']})")
                    tail = b.get("log_tail")
                    if isinstance(tail, list):
                        for line in tail:
                            out(f"    | {line}")
            if keys is not None:
                _signature_lines(ctx, installed.get(n, []))


def _signing(ctx: Context, keys: Survey, k: KernelInfo) -> dict[str, object]:
    """The certificate that signs this kernel's new builds (or why they go unsigned), and
    whether they will load: what a build would do, by the rules it signs by."""
    kernel = ctx.kernel(k.kernel, k.arch)
    values = signing.read_signing_settings(ctx, kernel)
    path = Path(signing.mok_paths(ctx, values, kernel)[1])
    doc: dict[str, object] = {"certificate": str(path), "present": path.is_file(), "unsigned": None,
                              "trust": None, "loads": None}
    cert = secureboot.load_certificate(path)
    if cert is not None:
        doc["trust"] = keys.state.trust(cert).value
    if not kernel.config.is_file():
        return doc  # no headers: nothing is built for it
    unsigned = signing.unsigned_because(ctx, kernel, values) or signing.sign_file_for(ctx, kernel, values)[1]
    if unsigned is not None:
        doc["unsigned"] = unsigned
        verdict = keys.judge(None, kernel)
    elif cert is None:
        verdict = keys.judge(None, kernel)
        if verdict.load is Load.no:  # refused for want of a signature: the first build makes the pair
            verdict = LoadVerdict(Load.no, "its certificate is made by the first signed build, not enrolled then")
    else:
        verdict = keys.judge(cert.as_signer(), kernel)
    doc["loads"] = {"verdict": verdict.load.value, "why": verdict.why}
    return doc


def _installed_modules(ctx: Context, keys: Survey, items: list[Item]) -> dict[int, list[dict[str, object]]]:
    cache = StatusCache(ctx)  # read, never saved: plan writes nothing
    found = {}
    for n, i in enumerate(items):
        if i.verdict is Verdict.installed:
            entry = tree.Entry(tree.State.installed, i.module, i.version, i.kernel, i.arch)
            with ctx.subshell():
                found[n] = statusjson.modules(ctx, entry, cache, keys)
    return found


def _signature_lines(ctx: Context, mods: list[dict[str, object]]) -> None:
    for m in mods:
        loads = m["loads"]
        if isinstance(loads, dict):
            signer = f"signed by {m['signer']}" if m["signer"] else "unsigned"
            ctx.console.print(f"    {m['name']}: {signer}; loads: {loads['verdict']} ({loads['why']})")


def exit_code(items: list[Item]) -> int:
    required = [i for i in items if i.required]
    if any(i.build is not None and i.build["result"] != "ok" for i in required):
        return EXIT_BUILD_FAILED
    if any(not i.verdict.fine for i in required):
        return EXIT_BLOCKED
    return 0


def run_plan(ctx: Context) -> int:
    o = ctx.options
    if o.all:
        raise DkmsError(5, "The action plan does not support the --all parameter.")
    kernels: list[KernelInfo] = []
    items: list[Item] = []
    for kver, arch in zip(o.kernels, o.arches):
        info, found = plan_kernel(ctx, kver, arch)
        kernels.append(info)
        items.extend(found)
    if o.plan_build:
        scratch.try_builds(ctx, items, quiet=o.json)
    items = [i for i in items if i.named]
    code = exit_code(items)
    keys = statusjson.survey(ctx)
    installed = _installed_modules(ctx, keys, items)
    if o.json:
        doc = {"schema": SCHEMA, "version": VERSION,
               "kernels": [{**k.to_json(), "signing": _signing(ctx, keys, k)} for k in kernels],
               "entries": [{**i.to_json(), "modules": installed.get(n, [])} for n, i in enumerate(items)],
               "exit": code}
        ctx.console.print(json.dumps(doc, indent=2))
    else:
        # signers and loading only matter, and are only shown, where signatures are enforced
        _text(ctx, kernels, items, keys if keys.state.enforcing else None, installed)
    return code
