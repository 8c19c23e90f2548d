"""BUILD_DEPENDS_REBUILD: after a module is installed for a kernel, rebuild the modules
built against an older version of it."""

from __future__ import annotations

from dkms_hooks.model import tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.kernel import version_sort_key
from dkms_hooks.ops import build, install, unbuild


def newest_version(ctx: Context, module: str, kver: str, arch: str) -> str:
    versions = [e.version for e in tree.status_entries(ctx.layout, module, "", kver, arch)]
    return max(versions, key=version_sort_key) if versions else ""


def _dependencies_updated(ctx: Context, module: str, version: str, kver: str, arch: str) -> bool:
    conf = read_conf(ctx, module, version, kver, arch, strict=True)
    base = ctx.layout.built_dir(module, version, kver, arch)
    for dep in conf.build_depends:
        current = newest_version(ctx, dep, kver, arch)
        if not current:
            continue
        record = base / f".dep_{dep}"
        if not record.is_file():
            return True
        if record.read_text().strip() != current:
            return True
    return False


def rebuild_dependents(ctx: Context, kver: str, arch: str) -> None:
    """After an install for ``kver``: rebuild and reinstall what was built against an older
    version of a module (and, in turn, what was built against those)."""
    pending: list[tuple[str, str]] = []
    for e in tree.status_entries(ctx.layout):
        if e.kver != kver or e.arch != arch:
            continue
        conf = read_conf(ctx, e.module, e.version, kver, arch)
        if not conf.build_depends or not conf.build_depends_rebuild or ctx.shell.force:
            continue
        if _dependencies_updated(ctx, e.module, e.version, kver, arch):
            pending.append((e.module, e.version))
    rebuilt: list[str] = []
    progress = True
    while progress and pending:
        progress = False
        waiting: list[tuple[str, str]] = []
        for m, v in pending:
            conf = read_conf(ctx, m, v, kver, arch)
            # a module waits while one of its dependencies is itself still to be rebuilt
            blocked = any(d in {pm for pm, _ in pending if (pm, _) != (m, v)} and d not in rebuilt
                          for d in conf.build_depends)
            if blocked:
                waiting.append((m, v))
                continue
            ctx.console.print("")
            ctx.console.print(f"Rebuilding module {m}/{v} due to updated dependencies")
            ctx.console.print("")
            install.do_uninstall(ctx, m, v, kver, arch)
            unbuild.do_unbuild(ctx, m, v, kver, arch)
            build.do_build(ctx, m, v, kver, arch)
            install.do_install(ctx, m, v, kver, arch)
            rebuild_dependents(ctx, kver, arch)
            rebuilt.append(m)
            progress = True
        pending = waiting
    if pending:
        ctx.console.print("Warning: The following modules could not be rebuilt due to dependency cycles:")
        for m, v in pending:
            ctx.console.print(f"  {m}/{v}")
