"""``dkms plan -k KVER``: for each module/version in the tree, whether it would build for a
kernel (headers, BUILD_EXCLUSIVE, a version known to fail there, BUILD_DEPENDS), without
building or writing anything. ``--build`` tries the builds for real in a scratch dkms tree
that is deleted afterwards. Text, or JSON with ``--json`` (schema in docs/json.md)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from dkms_hooks.model import tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.dkmsconf import EXCLUSIVE_DIRECTIVES, ModuleConf
from dkms_hooks.model.kernel import ver_key
from dkms_hooks.ops import buildrecord
from dkms_hooks.system.compat import StrEnum
from dkms_hooks.system.console import Console
from dkms_hooks.system.errors import DkmsError
from dkms_hooks.transaction import planner


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
        conf = read_conf(ctx.fork(Console(buf, buf)), 
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
    chosen = {i.module: i for i in items if i.newest}
    pending = [i for i in items if i.verdict in (Verdict.would_build, Verdict.blocked) and i.depends]
    wanted = {i.module: i.depends for i in chosen.values() if i.verdict is Verdict.would_build}
    _, cycle = planner.build_order(wanted, lambda d: d not in wanted)
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
