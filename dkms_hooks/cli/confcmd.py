"""``dkms conf``: show what dkms reads from a dkms.conf, for packagers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dkms_hooks.model import dkmsconf
from dkms_hooks.model.confread import print_diagnostics
from dkms_hooks.model.context import Context
from dkms_hooks.system.errors import DkmsError


def _conf_path(ctx: Context) -> Path:
    o = ctx.options
    given = o.positional[0] if o.positional else o.conf
    if not given:
        raise DkmsError(1, "Arguments <path> is not specified.", "Usage: conf [--raw] [--json] [-k KVER] [-a ARCH] PATH")
    path = Path(given)
    if path.is_dir():
        path = path / "dkms.conf"
    if not path.is_file():
        raise DkmsError(4, "Could not locate dkms.conf file.", f"File: {path} does not exist.")
    return path


def run_conf(ctx: Context) -> int:
    o = ctx.options
    path = _conf_path(ctx)
    kver, arch = o.kernels[0], o.arches[0]
    kernel = ctx.kernel(kver, arch)
    # module and module_version are the file's own name and version: read it once to learn them
    scope = ctx.conf_scope("", "", kernel)
    first = dkmsconf.read_values([path], scope=scope, env=ctx.build_env())
    module, version = first.scalar("PACKAGE_NAME"), first.scalar("PACKAGE_VERSION")
    scope = ctx.conf_scope(module, version, kernel)
    files = [path] if o.raw else [path, *ctx.layout.conf_overrides(module, version, kver, arch)]
    result = dkmsconf.read_values(files, scope=scope, env=ctx.build_env())
    if o.raw:
        if o.json:
            data = {n: {str(i): v for i, v in sorted(vals.items())} for n, vals in sorted(result.values.items())
                    if n in dkmsconf.DIRECTIVES}
            ctx.console.print(json.dumps(data, indent=2, sort_keys=True))
        else:
            for line in dkmsconf.raw_lines(result.values):
                ctx.console.print(line)
        return 0
    conf = dkmsconf.resolve(
        result, path=path, kernel=kernel, running_distribution=ctx.distro,
        default_build_dir=ctx.layout.build_dir(module, version), addon_modules_dir=ctx.addon_modules_dir,
        directives=o.directives, deprecation_warnings=True,
    )
    strict_diags, strict_ok = dkmsconf.strict_checks(conf) if conf.ok else ([], False)
    diags = [*conf.diagnostics, *strict_diags]
    make = conf.make_command
    if make.startswith("make"):
        make = f"make -j{ctx.parallel_jobs} KERNELRELEASE={kver}" + make[4:]
    effective = {
        "path": os.fspath(path),
        "kernel": kver,
        "arch": arch,
        "package_name": conf.package_name,
        "package_version": conf.package_version,
        "autoinstall": conf.autoinstall,
        "make": make,
        "patches": conf.patches,
        "build_depends": conf.build_depends,
        "build_depends_rebuild": conf.build_depends_rebuild,
        "build_excluded": conf.build_exclude,
        "scripts": {k: conf.scalar(k) for k in ("PRE_BUILD", "POST_BUILD", "POST_ADD", "PRE_INSTALL",
                                                 "POST_INSTALL", "POST_REMOVE") if conf.scalar(k)},
        "modules": [
            {
                "index": m.index,
                "built": f"{m.built_path}.ko",
                "dest": f"{m.dest_location}/{m.dest_name}.ko",
                "strip": m.strip,
                "excluded": conf.module_excluded(m.index),
            }
            for m in conf.modules
        ],
        "errors": [d.text for d in diags if "Error!" in d.text],
        "warnings": [d.text for d in diags if "Error!" not in d.text and d.stream == "err"],
    }
    valid = conf.ok and strict_ok
    if o.json:
        effective["valid"] = valid
        ctx.console.print(json.dumps(effective, indent=2))
    else:
        print_diagnostics(ctx, diags)
        out = ctx.console.print
        out(f"PACKAGE_NAME={conf.package_name}")
        out(f"PACKAGE_VERSION={conf.package_version}")
        out(f"AUTOINSTALL={'yes' if conf.autoinstall else 'no'}")
        out(f"MAKE={make}")
        for p in conf.patches:
            out(f"PATCH={p}")
        if conf.build_depends:
            out(f"BUILD_DEPENDS={' '.join(conf.build_depends)}")
        for k in ("PRE_BUILD", "POST_BUILD", "POST_ADD", "PRE_INSTALL", "POST_INSTALL", "POST_REMOVE"):
            if conf.scalar(k):
                out(f"{k}={conf.scalar(k)}")
        for m in conf.modules:
            flags = [] if m.strip else ["no strip"]
            if conf.module_excluded(m.index):
                flags.append("excluded by BUILD_EXCLUSIVE")
            extra = f" ({', '.join(flags)})" if flags else ""
            out(f"module[{m.index}]={m.built_path}.ko -> {m.dest_location}/{m.dest_name}.ko{extra}")
        if conf.build_exclude:
            out(f"BUILD_EXCLUSIVE: not built for {kver} ({arch})")
    if not valid:
        raise DkmsError(8, "Bad conf file.", f"File: {path} does not represent a valid dkms.conf file.")
    return 0
