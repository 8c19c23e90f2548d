"""Work over every module of one kernel, shared by upstream's kernel verbs and host events:
which module versions autoinstall considers, and taking modules off a kernel that is being
removed or reinstalled."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dkms_hooks.model import tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.dkmsconf import ModuleConf
from dkms_hooks.model.kernel import ver_key
from dkms_hooks.ops import maybe
from dkms_hooks.system.errors import DkmsError, report


def latest_versions(ctx: Context) -> list[tuple[str, str]]:
    """The newest version of each known module, in the order modules were first seen."""
    latest: dict[str, str] = {}
    for e in tree.status_entries(ctx.layout):
        if e.state is tree.State.broken:
            ctx.console.error(f"{e.module}/{e.version} is broken! Missing the source directory or the symbolic "
                              "link pointing to it.", "Manual intervention is required!")
            continue
        if e.module not in latest or ver_key(e.version) > ver_key(latest[e.module]):
            latest[e.module] = e.version
    return list(latest.items())


def registered_conf(ctx: Context, module: str, version: str, kver: str, arch: str) -> ModuleConf:
    """The dkms.conf a registration reads for a kernel: its source link's, whatever -c says."""
    return read_conf(ctx, module, version, kver, arch, os.fspath(ctx.layout.source_link(module, version) / "dkms.conf"))


@dataclass(frozen=True)
class Removal:
    module: str
    version: str
    error: DkmsError | None = None


def unbuild_for_kernel(ctx: Context, kver: str, arch: str, *, autoinstall_only: bool, say: str,
                       gap: bool = False, conf_errors_stop: bool = True) -> list[Removal]:
    """Uninstall and unbuild, for ``kver``, every built module (``autoinstall_only``: those
    with AUTOINSTALL, the ones a kernel reinstall builds again). ``say`` announces each, on
    stdout, or on stderr when it starts with ``dkms:`` (upstream's wording); ``gap`` prints
    an empty line after each. Each module's failure is its own. depmod for the kernel is left
    to the caller, once: the transaction's depmod batch collects it."""
    if ctx.tx.depmod_batch is None:
        raise RuntimeError("unbuild_for_kernel runs inside a transaction (ctx.tx.depmod_batch)")
    done: list[Removal] = []
    for m, v in tree.module_versions(ctx.layout):
        if not tree.is_built(ctx.layout, m, v, kver, arch):
            continue
        try:
            with ctx.subshell():
                if autoinstall_only and not registered_conf(ctx, m, v, kver, arch).autoinstall:
                    continue
        except DkmsError as e:
            if conf_errors_stop:
                raise
            report(ctx.console, e)
            done.append(Removal(m, v, e))
            continue
        line = say.format(module=m, version=v, kver=kver, arch=arch)
        if line.startswith("dkms:"):
            ctx.console.eprint(line)
        else:
            ctx.console.print(line)
        with ctx.subshell():
            try:
                maybe.maybe_uninstall(ctx, m, v, kver, arch)
                maybe.maybe_unbuild(ctx, m, v, kver, arch)
                done.append(Removal(m, v))
            except DkmsError as e:
                report(ctx.console, e)
                done.append(Removal(m, v, e))
        if gap:
            ctx.console.print("")
    return done
