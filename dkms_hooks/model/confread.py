"""Upstream's read_conf: a module's dkms.conf for a kernel, read through bash (or, for plain
assignments, without it), resolved with upstream's defaults, and remembered as upstream's
last-read globals (and, in a transaction, a memo shared by its jobs) remember it."""

from __future__ import annotations

import os
from pathlib import Path

from dkms_hooks.model import dkmsconf
from dkms_hooks.model.context import Context
from dkms_hooks.system import run
from dkms_hooks.system.errors import DkmsError


def print_diagnostics(ctx: Context, diags: list[dkmsconf.Diagnostic]) -> None:
    for d in diags:
        if d.stream == "out":
            ctx.console.print(d.text)
        else:
            ctx.console.eprint(d.text)

def read_conf(
    ctx: Context,
    module: str,
    version: str,
    kver: str,
    arch: str,
    path: str | None = None,
    *,
    strict: bool = False,
    or_die: bool = True,
) -> dkmsconf.ModuleConf:
    """Upstream's read_conf[_strict][_or_die]."""
    conf_file = path or ctx.options.conf or os.fspath(ctx.layout.source_link(module, version) / "dkms.conf")
    if not os.access(conf_file, os.R_OK):
        raise DkmsError(4, "Could not locate dkms.conf file.", f"File: {conf_file} does not exist.")
    key = (module, version, kver, arch, os.path.realpath(conf_file))
    memo_key = _memo_key(ctx, key) if ctx.tx.conf_memo is not None else None
    if ctx.shell.last_conf_key == key and ctx.shell.last_conf is not None:
        conf = ctx.shell.last_conf
    elif memo_key is not None and ctx.tx.conf_memo is not None and memo_key in ctx.tx.conf_memo:
        conf = ctx.tx.conf_memo[memo_key]
        ctx.shell.last_conf_key, ctx.shell.last_conf = key, conf
    else:
        kernel = ctx.kernel(kver, arch)
        files = [Path(conf_file), *ctx.layout.conf_overrides(module, version, kver, arch)]
        result = dkmsconf.read_values(files, scope=ctx.conf_scope(module, version, kernel), env=ctx.build_env())
        vmlinux_clang = False
        vmlinux = kernel.source_dir / "vmlinux"
        if vmlinux.exists():
            res = run.run(["readelf", "-p", ".comment", vmlinux], stderr=run.STDOUT)
            vmlinux_clang = "clang" in res.stdout
        conf = dkmsconf.resolve(
            result,
            path=Path(conf_file),
            kernel=kernel,
            running_distribution=ctx.distro,
            default_build_dir=ctx.layout.build_dir(module, version),
            dest_location=ctx.dest_location,
            directives=ctx.options.directives,
            deprecation_warnings=strict,
            vmlinux_is_clang=vmlinux_clang,
        )
        for name, value in ctx.options.directives:
            ctx.shell.exported[name] = value
        print_diagnostics(ctx, conf.diagnostics)
        if conf.ok:
            ctx.shell.last_conf_key, ctx.shell.last_conf = key, conf
            # one that printed warnings is read again, so its warnings show as often as before
            if memo_key is not None and ctx.tx.conf_memo is not None and not conf.diagnostics:
                ctx.tx.conf_memo[memo_key] = conf
    ok = conf.ok
    if ok and strict:
        diags, ok = dkmsconf.strict_checks(conf)
        print_diagnostics(ctx, diags)
    if not ok and or_die:
        shown = path or ctx.options.conf
        raise DkmsError(8, "Bad conf file.", f"File: {shown} does not represent a valid dkms.conf file.")
    return conf

def _memo_key(ctx: Context, key: tuple[str, ...]) -> tuple[object, ...] | None:
    module, version, kver, arch, conf_file = key
    try:
        st = os.stat(conf_file)
    except OSError:
        return None
    ids: list[object] = [(st.st_ino, st.st_mtime_ns, st.st_size)]
    for f in ctx.layout.conf_overrides(module, version, kver, arch):
        try:
            st = f.stat()
            ids.append((os.fspath(f), st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            pass  # absent overrides are the common case
    o = ctx.options
    return (*key, *ids, tuple(o.directives), o.kernel_source_dir, o.kernel_config)
