"""``dkms plan -k KVER``: for each module/version in the tree, whether it would build for a
kernel (headers, BUILD_EXCLUSIVE, a version known to fail there, BUILD_DEPENDS), without
building or writing anything. ``--build`` tries the builds for real in a scratch dkms tree
that is deleted afterwards. Text, or JSON with ``--json`` (schema in docs/json.md)."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field

from dkms_hooks import buildrecord, tree
from dkms_hooks.compat import StrEnum
from dkms_hooks.console import Console
from dkms_hooks.context import Context
from dkms_hooks.dkmsconf import EXCLUSIVE_DIRECTIVES, ModuleConf
from dkms_hooks.errors import DkmsError
from dkms_hooks.kernel import ver_key

SCHEMA = "dkms-hooks/plan"
VERSION = 1

#: exit codes: something that should build is blocked; a scratch build failed (--build)
EXIT_BLOCKED = 1
EXIT_BUILD_FAILED = 10


class Verdict(StrEnum):
    installed = "installed"
    built = "built"
    would_build = "would-build"
    skip = "skip"
    blocked = "blocked"

    @property
    def fine(self) -> bool:
        return self is not Verdict.blocked


@dataclass(frozen=True)
class Reason:
    #: no-headers | build-exclusive | known-failing | dependency | dependency-missing |
    #: dependency-cycle | invalid-conf | broken
    code: str
    message: str
    package: str = ""
    log: str = ""

    def to_json(self) -> dict[str, str]:
        d = {"code": self.code, "message": self.message}
        if self.package:
            d["package"] = self.package
        if self.log:
            d["log"] = self.log
        return d


@dataclass
class Item:
    module: str
    version: str
    kernel: str
    arch: str
    verdict: Verdict
    #: counts for the exit code: the newest version, AUTOINSTALL or named with -m
    required: bool
    #: the newest version of this module in the tree (the one autoinstall takes)
    newest: bool = True
    autoinstall: bool = False
    depends: list[str] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    #: the scratch build's result (--build)
    build: dict[str, object] | None = None
    #: matches -m/-v (the others are looked at only as BUILD_DEPENDS, and not shown)
    named: bool = True

    def block(self, reason: Reason) -> None:
        self.verdict = Verdict.blocked
        self.reasons.append(reason)

    def to_json(self) -> dict[str, object]:
        return {
            "module": self.module, "version": self.version, "kernel": self.kernel, "arch": self.arch,
            "verdict": self.verdict.value, "required": self.required, "newest": self.newest,
            "autoinstall": self.autoinstall,
            "depends": self.depends, "reasons": [r.to_json() for r in self.reasons], "build": self.build,
        }


@dataclass(frozen=True)
class KernelInfo:
    kernel: str
    arch: str
    headers: str
    package: str

    def to_json(self) -> dict[str, object]:
        return {"kernel": self.kernel, "arch": self.arch, "headers": self.headers or None,
                "headers_package": self.package or None}


def _read_conf(ctx: Context, module: str, version: str, kver: str, arch: str) -> tuple[ModuleConf | None, str]:
    """The dkms.conf for this kernel, with what reading it printed kept (not shown)."""
    buf = io.StringIO()
    try:
        conf = ctx.fork(Console(buf, buf)).read_conf(
            module, version, kver, arch, os.fspath(ctx.layout.source_link(module, version) / "dkms.conf"),
            or_die=False)
    except DkmsError as e:
        return None, " ".join(e.lines)
    if not conf.ok:
        return None, " ".join(line.strip() for line in buf.getvalue().splitlines() if line.strip())
    return conf, ""


def _exclusive_text(conf: ModuleConf) -> str:
    found = []
    for name in EXCLUSIVE_DIRECTIVES:
        for i, v in sorted(conf.values.get(name, {}).items()):
            if v:
                found.append(f'{name}{f"[{i}]" if i else ""}="{v}"')
    return ", ".join(found)


def _newest(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    latest: dict[str, str] = {}
    for m, v in pairs:
        if m not in latest or ver_key(v) > ver_key(latest[m]):
            latest[m] = v
    return set(latest.items())


def plan_kernel(ctx: Context, kver: str, arch: str) -> tuple[KernelInfo, list[Item]]:
    lay = ctx.layout
    kernel = ctx.kernel(kver, arch)
    headers = os.fspath(kernel.source_dir) if kernel.has_headers else ""
    package = "" if headers else ctx.headers_hint(kver)
    info = KernelInfo(kver, arch, headers, package)
    o = ctx.options
    # every module is looked at: one named with -m may depend on others
    pairs = tree.module_versions(lay)
    newest = _newest([p for p in pairs if not tree.is_broken(lay, *p)])
    items: list[Item] = []
    for m, v in pairs:
        named = (not o.module or m == o.module) and (not o.version or v == o.version)
        if o.module and o.version and named:
            newest.add((m, v))  # the version asked for is the one that counts
        if tree.is_broken(lay, m, v):
            item = Item(m, v, kver, arch, Verdict.blocked, bool(o.module) and named, named=named)
            item.reasons.append(Reason("broken", "the module source directory or the link to it is missing"))
            items.append(item)
            continue
        if not tree.is_added(lay, m, v):
            continue
        conf, problem = _read_conf(ctx, m, v, kver, arch)
        if conf is None:
            item = Item(m, v, kver, arch, Verdict.blocked, (m, v) in newest and named, (m, v) in newest,
                        named=named)
            item.reasons.append(Reason("invalid-conf", problem or "invalid dkms.conf"))
            items.append(item)
            continue
        required = named and (m, v) in newest and (conf.autoinstall or bool(o.module))
        item = Item(m, v, kver, arch, Verdict.would_build, required, (m, v) in newest, conf.autoinstall,
                    list(conf.build_depends), named=named)
        items.append(item)
        if tree.is_installed(lay, m, v, kver, arch):
            item.verdict = Verdict.installed
        elif tree.is_built(lay, m, v, kver, arch):
            item.verdict = Verdict.built
        elif conf.build_exclude:
            item.verdict = Verdict.skip
            item.reasons.append(Reason("build-exclusive", f"{_exclusive_text(conf)} does not match this kernel"))
        elif not headers:
            hint = f" (install {package})" if package else ""
            item.block(Reason("no-headers", f"no headers at {kernel.source_dir}{hint}", package=package))
        else:
            record = buildrecord.read(ctx, m, v, kver, arch)
            if record is not None and record.build_failed:
                when = record.to_json()["time"]
                item.block(Reason("known-failing", f"the last build for this kernel failed at {when} "
                                  f"(exit {record.exit}: {record.message})", log=record.log))
    _check_dependencies(items, {m for m, _ in pairs})
    return info, items


def _check_dependencies(items: list[Item], known: set[str]) -> None:
    from dkms_hooks.engine import _ordered

    chosen = {i.module: i for i in items if i.newest}
    pending = [i for i in items if i.verdict in (Verdict.would_build, Verdict.blocked) and i.depends]
    _, cycle = _ordered({i.module: i.depends for i in chosen.values() if i.verdict is Verdict.would_build})
    for i in pending:
        if i.module in cycle and chosen.get(i.module) is i:
            i.block(Reason("dependency-cycle", f"circular BUILD_DEPENDS: {' '.join(i.depends)}"))
    changed = True
    while changed:
        changed = False
        for i in pending:
            if i.verdict is not Verdict.would_build:
                continue
            for dep in i.depends:
                if dep not in known:
                    i.block(Reason("dependency-missing", f"BUILD_DEPENDS not registered with DKMS: {dep}"))
                elif (d := chosen.get(dep)) is None or not (
                        d.verdict is Verdict.installed
                        or (d.verdict in (Verdict.built, Verdict.would_build) and d.autoinstall)):
                    what = "not registered" if d is None else f"{d.version}: {d.verdict.value}"
                    i.block(Reason("dependency", f"BUILD_DEPENDS {dep} would not be installed ({what})"))
                else:
                    continue
                changed = True
                break


# --- output --------------------------------------------------------------------------
_KIND = {Verdict.skip: "skipped", Verdict.blocked: "failed"}


def _text(ctx: Context, kernels: list[KernelInfo], items: list[Item]) -> None:
    from dkms_hooks import progress

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
        from dkms_hooks import scratch

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
