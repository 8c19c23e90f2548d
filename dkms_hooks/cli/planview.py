"""``dkms plan``'s output: upstream-style text or a JSON document (docs/json.md), and the
exit code, from the items transaction/plan.py works out."""

from __future__ import annotations

import json

from dkms_hooks.model.context import Context
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


def _text(ctx: Context, kernels: list[KernelInfo], items: list[Item]) -> None:
    out = ctx.console.print
    colour = progress.colour_enabled(ctx.console.out, ctx.env)
    for k in kernels:
        if k.headers:
            out(f"Plan for kernel {k.kernel} ({k.arch}), headers at {k.headers}:")
        else:
            hint = f" (install {k.package})" if k.package else ""
            out(f"Plan for kernel {k.kernel} ({k.arch}), no headers{hint}:")
        mine = [i for i in items if (i.kernel, i.arch) == (k.kernel, k.arch)]
        if not mine:
            out("  no modules")
        for i in mine:
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
    if o.json:
        doc = {"schema": SCHEMA, "version": VERSION, "kernels": [k.to_json() for k in kernels],
               "entries": [i.to_json() for i in items], "exit": code}
        ctx.console.print(json.dumps(doc, indent=2))
    else:
        _text(ctx, kernels, items)
    return code
