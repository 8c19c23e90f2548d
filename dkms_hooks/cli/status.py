"""``dkms status``: upstream's text, line for line."""

from __future__ import annotations

from pathlib import Path

from dkms_hooks.model import dkmsconf, installed, tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.statuscache import StatusCache, StatusConf
from dkms_hooks.system.compat import StrEnum


class StatusWarning(StrEnum):
    """What upstream appends to a status line in parentheses, as a stable name."""

    original_modules = "original-modules-exist"
    built_missing = "built-modules-missing"
    differs = "built-differs-from-installed"

    @property
    def text(self) -> str:
        return _WARNING_TEXT[self]


_WARNING_TEXT = {
    StatusWarning.original_modules: "Original modules exist",
    StatusWarning.built_missing: "Built modules are missing in the kernel modules folder",
    StatusWarning.differs: "Differences between built and installed modules",
}


def entry_conf(ctx: Context, e: tree.Entry, cache: StatusCache | None = None) -> StatusConf | dkmsconf.ModuleConf:
    conf: StatusConf | dkmsconf.ModuleConf | None = cache.get(e.module, e.version, e.kver, e.arch) if cache else None
    if conf is None:
        conf = read_conf(ctx, e.module, e.version, e.kver, e.arch,
                             str(ctx.layout.source_link(e.module, e.version) / "dkms.conf"), or_die=False)
    return conf


def warnings(ctx: Context, e: tree.Entry, cache: StatusCache | None = None) -> list[StatusWarning]:
    lay = ctx.layout
    conf = entry_conf(ctx, e, cache)
    found: list[StatusWarning] = []
    if lay.original_module_dir(e.module, e.kver, e.arch).is_dir():
        found.append(StatusWarning.original_modules)
    compression = ctx.kernel(e.kver, e.arch).compression(lay)
    built_dir = lay.built_dir(e.module, e.version, e.kver, e.arch) / "module"
    for m in conf.modules:
        if conf.module_excluded(m.index):
            continue
        tree_mod = installed.compressed_or_uncompressed(built_dir, m.dest_name, compression)
        if tree_mod is None:
            return found + [StatusWarning.built_missing]
        if tree.is_active(lay, e.module, e.version, e.kver, e.arch):
            loc = installed.actual_dest_location(ctx, conf.modules[m.index], e.module, e.kver, e.arch, compression)
            real = None
            if loc is not None:
                real = installed.compressed_or_uncompressed(Path(f"{lay.install_tree}/{e.kver}{loc}"), m.dest_name,
                                                          compression)
            if real is None or not installed.same_file(tree_mod, real):
                return found + [StatusWarning.differs]
    return found


def _extra(ctx: Context, e: tree.Entry, cache: StatusCache | None = None) -> str:
    return "".join(f" ({w.text})" for w in warnings(ctx, e, cache))


def collect(ctx: Context, module: str, version: str, kver: str, arch: str) -> list[tree.Entry]:
    """The entries status would print, with broken ones reported on stderr as it does."""
    entries = tree.status_entries(ctx.layout, module, version, kver, arch)
    for e in entries:
        if e.state is tree.State.broken:
            ctx.console.error(f"{e.module}/{e.version}: Missing the module source directory or the symbolic "
                              "link pointing to it.", "Manual intervention is required!")
    return entries


def status_lines(ctx: Context, module: str, version: str, kver: str, arch: str,
                 cache: StatusCache | None = None) -> None:
    console = ctx.console
    for e in tree.status_entries(ctx.layout, module, version, kver, arch):
        if e.state is tree.State.broken:
            console.print(f"{e.module}/{e.version}: broken")
            console.error(f"{e.module}/{e.version}: Missing the module source directory or the symbolic link "
                          "pointing to it.", "Manual intervention is required!")
        elif e.state is tree.State.added:
            console.print(f"{e.module}/{e.version}: added")
        else:
            with ctx.subshell():
                suffix = _extra(ctx, e, cache)
            console.print(f"{e.module}/{e.version}, {e.kver}, {e.arch}: {e.state}{suffix}")


def show_status(ctx: Context) -> None:
    o = ctx.options
    cache = StatusCache(ctx)
    try:
        if not o.kernels:
            status_lines(ctx, o.module, o.version, "", o.arches[0] if o.arches else "", cache)
            return
        for i, k in enumerate(o.kernels):
            status_lines(ctx, o.module, o.version, k, o.arches[i] if i < len(o.arches) else "", cache)
    finally:
        cache.save()
