"""``dkms build``: copy the source, patch, make, strip, sign, compress, and move the
result into the tree in one rename."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import string
import time
from pathlib import Path

from dkms_hooks import UPSTREAM_RELEASE
from dkms_hooks.model import safety, tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context, Signing
from dkms_hooks.model.dkmsconf import BuiltModule, ModuleConf
from dkms_hooks.model.kernel import Compression, KernelTarget, version_sort_key
from dkms_hooks.ops import add, buildrecord, builduser, journal, scripts, signing, steps
from dkms_hooks.ops.cache import step as cachestep
from dkms_hooks.ops.cache.store import Built, Entry
from dkms_hooks.ops.files import prune_empty_parents
from dkms_hooks.system import run
from dkms_hooks.system.errors import EXIT_SKIPPED, DkmsError, DkmsWarnExit
from dkms_hooks.system.run import RunAs


def _compiler_env(ctx: Context, kernel: KernelTarget, env: dict[str, str]) -> None:
    """Use the compiler (and linker) the kernel was built with, as upstream does."""
    kvars = kernel.source_dir / ".kernelvariables"
    if kvars.is_file():
        script = f"show-%:\n\t@echo $($*)\ninclude {kvars}\n"
        res = run.run(["make", "-f", "-", "show-CC"], input=script, env=env)
        env["CC"] = res.stdout.strip()
    else:
        env.pop("CC", None)
    if not kernel.config.exists():
        return
    kconfig = kernel.kconfig()
    text = kconfig.get("CONFIG_CC_VERSION_TEXT", "")
    m = re.match(r'^"*([^" ]*) ', text)
    if m and run.which(m.group(1), env):
        env["CC"] = env["KERNEL_CC"] = m.group(1)
    if kconfig.get("CONFIG_CC_IS_CLANG") == "y" and run.which("clang", env):
        env["CC"] = env["KERNEL_CC"] = "clang"
    if kconfig.get("CONFIG_LD_IS_LLD") == "y" and run.which("ld.lld", env):
        env["LD"] = env["KERNEL_LD"] = "ld.lld"


def _build_environment(ctx: Context, env: dict[str, str]) -> dict[str, str]:
    path = ctx.framework.get("build_environment", "")
    if not path or not os.path.isfile(path):
        return env
    res = run.run(["bash", "-c", 'source "$1" >/dev/null 2>&1; env -0', "bash", path], env=env)
    if res.returncode != 0:
        return env
    new: dict[str, str] = {}
    for item in res.stdout.split("\0"):
        if "=" in item:
            k, _, v = item.partition("=")
            new[k] = v
    return new


def _missing_build_depends(ctx: Context, conf: ModuleConf, kver: str, arch: str) -> list[str]:
    missing = []
    for dep in conf.build_depends:
        entries = tree.status_entries(ctx.layout, dep, "", kver, arch)
        if not any(e.state is tree.State.installed for e in entries):
            missing.append(dep)
    return missing


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True, copy_function=shutil.copy2)


def _compress(ctx: Context, comp: Compression, path: Path) -> Path | None:
    opts = {
        Compression.gzip: ("gzip", ctx.framework.get("compress_gzip_opts", "")),
        Compression.xz: ("xz", ctx.framework.get("compress_xz_opts", "")),
        Compression.zstd: ("zstd", ctx.framework.get("compress_zstd_opts", "")),
    }
    tool, extra = opts[comp]
    try:
        res = run.run([tool, *extra.split(), "-f", path], stdout=None)
    except run.ToolMissing:
        # upstream's fallback: the module goes in uncompressed, which every kernel loads
        ctx.console.warn(f"{tool} not found: {path.name} is installed uncompressed.")
        return None
    out = path.with_name(path.name + comp.suffix)
    return out if res.returncode == 0 and out.exists() else None


def allows_private_build(ctx: Context, conf: ModuleConf, module: str, version: str) -> bool:
    """Whether nothing in the dkms.conf can depend on the shared build directory: no build
    scripts (they may name it), and a make command that names no path in the module's tree
    other than the build directory itself."""
    if conf.script("PRE_BUILD") or conf.script("POST_BUILD"):
        return False
    shared = os.fspath(ctx.layout.build_dir(module, version))
    rest = conf.make_command.replace(shared, "")
    return not ("$" in rest or os.fspath(ctx.layout.version_dir(module, version)) in rest)


def private_build_dir(ctx: Context, conf: ModuleConf, module: str, version: str, kver: str,
                      arch: str) -> Path | None:
    """A build directory of this kernel's own, while a run builds a module for several
    kernels side by side (ctx.tx.private_builds) and its dkms.conf allows it."""
    if not ctx.tx.private_builds or not allows_private_build(ctx, conf, module, version):
        return None
    return ctx.layout.private_build_dir(module, version, kver, arch)


def do_build(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    """Build, and keep the result (and a failed build's log) for status and plan."""
    try:
        how = _do_build(ctx, module, version, kver, arch)
    except DkmsError as e:
        if e.code in buildrecord.BUILD_FAILURES:
            buildrecord.record_failure(ctx, module, version, kver, arch, e)
        raise
    buildrecord.record_success(ctx, module, version, kver, arch, source=how.source if how else cachestep.Source.make,
                               cache_note=how.note if how else "", cache_key=how.key if how else "")


def _do_build(ctx: Context, module: str, version: str, kver: str, arch: str) -> cachestep.Lookup | None:
    lay = ctx.layout
    if not tree.is_added(lay, module, version):
        add.add_module(ctx, module, version)
        ctx.console.print("")
    build_dir = lay.build_dir(module, version)
    source_dir = lay.source_link(module, version)
    kernel_dir = lay.kernel_dir(module, version, kver)
    base_dir = lay.built_dir(module, version, kver, arch)
    if base_dir.is_dir():
        raise DkmsError(
            3,
            f"This module/version has already been built on: {kver}",
            f"Directory {base_dir} already exists. Use the dkms remove function before trying to build again.",
        )
    kernel = ctx.kernel(kver, arch)
    compression = kernel.compression(lay)
    conf = read_conf(ctx, module, version, kver, arch, strict=True)
    if conf.build_exclude:
        raise DkmsWarnExit(
            EXIT_SKIPPED,
            f"The {base_dir}/dkms.conf",
            f"for module {module}/{version} includes BUILD_EXCLUSIVE directives",
            "which do not match this kernel/arch/config for any modules.",
            "This indicates that it should not be built.",
        )
    if len(os.listdir(source_dir)) < 2:
        raise DkmsError(
            8,
            f"The directory {source_dir} does not appear to have module source located within it.",
            "Build halted.",
        )
    user = builduser.resolve(ctx)
    signing.prepare_kernel_and_signing(ctx, kver, arch)
    sign = ctx.shell.signing
    private = private_build_dir(ctx, conf, module, version, kver, arch)
    make_command = conf.make_command
    if private is not None:
        make_command = make_command.replace(os.fspath(build_dir), os.fspath(private))
        build_dir = private

    env = ctx.build_env()
    _compiler_env(ctx, kernel, env)
    before = dict(env)
    env = _build_environment(ctx, env)
    # what a build environment file and --directive add, for the cache's key
    extra_env = {k: v for k, v in env.items() if before.get(k) != v}
    extra_env.update(ctx.shell.exported)
    if ctx.tx.cc_probes is not None:
        env = ctx.tx.cc_probes.env(env, build_dir, user)

    missing = _missing_build_depends(ctx, conf, kver, arch)
    if missing:
        listed = "".join(" " + m for m in missing)
        if ctx.shell.force:
            ctx.console.warn(
                f"Trying to build module {module}/{version} for kernel {kver} ({arch}) "
                f"despite of missing BUILD_DEPENDS:{listed}."
            )
        else:
            raise DkmsError(
                13,
                f"Aborting build of module {module}/{version} for kernel {kver} ({arch}) "
                f"due to missing BUILD_DEPENDS:{listed}.",
                "You may override by specifying --force.",
            )

    with journal.operation(ctx, "build", module, version, kver, arch, build_dir=os.fspath(build_dir),
                           kernel_dir=os.fspath(kernel_dir), base_dir=os.fspath(base_dir)) as op:
        how = _make_and_place(ctx, op, conf, kernel, env, extra_env, sign, compression, make_command, build_dir,
                              user, module, version, kver, arch)
    if private is not None:
        prune_empty_parents(private.parent, lay.hooks_state)
        # as after upstream's build: no build/ left (add made an empty one)
        with contextlib.suppress(OSError):
            lay.build_dir(module, version).rmdir()
    return how


def _make_and_place(ctx: Context, op: journal.Operation, conf: ModuleConf, kernel: KernelTarget,
                    env: dict[str, str], extra_env: dict[str, str], sign: Signing | None, compression: Compression,
                    make_command: str, build_dir: Path, user: RunAs | None, module: str, version: str, kver: str,
                    arch: str) -> cachestep.Lookup | None:
    lay = ctx.layout
    source_dir = lay.source_link(module, version)
    kernel_dir = lay.kernel_dir(module, version, kver)
    base_dir = lay.built_dir(module, version, kver, arch)
    build_log = build_dir / "make.log"
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    _copy_tree(Path(os.path.realpath(source_dir)), build_dir)
    etc_patches = lay.script_override_dir(module) / "patches"
    if etc_patches.is_dir():
        _copy_tree(etc_patches, build_dir / "patches")
    with open(build_log, "a", encoding="utf-8") as log:
        log.write(f"DKMS ({UPSTREAM_RELEASE}) make.log for {module}/{version} for kernel {kver} ({arch})\n")
        log.write(time.strftime("%a %b %e %H:%M:%S %Z %Y") + "\n")
    if user is not None:
        builduser.hand_over(build_dir, user)

    variables = ctx.conf_scope(module, version, kernel)
    for p in conf.patches:
        if "/../" in f"patches/{p}" or safety.climbs_out(p):
            raise DkmsError(5, f"Patch {p} as specified in dkms.conf contains '..' path component.")
        # joined as text, as upstream does: an absolute PATCH stays below patches/
        if not Path(f"{build_dir}/patches/{p}").exists():
            raise DkmsError(
                5, f"Patch {p} as specified in dkms.conf cannot be", f"found in {build_dir}/patches/."
            )
        rc = steps.invoke_shell(ctx, f"patch -p1 < ./patches/{p}", f"Applying patch {p}", build_log,
                                cwd=build_dir, variables=variables, env=env, as_user=user)
        if rc != 0:
            raise DkmsError(6, f"Application of patch {p} failed.", f"Consult {build_log} for more information.")

    scripts.run_script(ctx, "pre_build", conf.script("PRE_BUILD"), module, version, logfile=build_log,
                       variables=variables, as_user=user)

    found: cachestep.Lookup | None = None
    if ctx.hooks.cache.enabled:
        deps = cachestep.dependency_symvers(ctx, conf, kver, arch)
        inputs = cachestep.inputs(ctx, conf, kernel, module, version, make_command=make_command,
                                  build_dir=build_dir, env=env, extra_env=extra_env, deps=deps)
        found = cachestep.find(ctx, inputs, deps)
    if make_command.startswith("make"):
        # beside other builds, make takes its jobs from the shared jobserver instead of -jN
        jobs = "" if ctx.jobserver is not None else f" -j{ctx.parallel_jobs}"
        make_command = f"make{jobs} KERNELRELEASE={kver}" + make_command[4:]
    hit = found.entry if found is not None else None
    if hit is not None:
        # upstream's line, so that scripts reading it see a build; the log says where from
        steps.invoke_python(ctx, make_command, "Building module(s)",
                            functools.partial(_from_cache, hit, make_command, build_log))
    else:
        rc = steps.invoke_shell(ctx, make_command, "Building module(s)", build_log, cwd=build_dir,
                                variables=variables, env=env, as_user=user)
        if rc != 0:
            raise DkmsError(10, f"Bad return status for module build on kernel: {kver} ({arch})",
                            f"Consult {build_log} for more information.")

    wanted = [m for m in conf.modules if not conf.module_excluded(m.index)]
    cached = {b.built_path: b.path for b in hit.modules} if hit is not None else {}
    for m in wanted:
        if m.built_path not in cached and not Path(f"{build_dir}/{m.built_path}.ko").exists():
            raise DkmsError(
                7,
                f"Build of {m.built_path}.ko failed for: {kver} ({arch})",
                "Make sure the name and location of the generated module are correct,",
                f"or consult {build_log} for more information.",
            )

    op.advance("compiled")
    op.note(kernel_dir_existed=kernel_dir.is_dir())
    kernel_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(_mkdtemp(kernel_dir, f".tmp_{arch}_"))
    op.note(staging=os.fspath(staging))
    (staging / "log").mkdir()
    (staging / "module").mkdir()
    symvers = build_dir / "Module.symvers"
    if hit is not None:
        symvers = hit.symvers or symvers
    work = staging / ".work"
    if symvers.is_file():
        shutil.copy2(builduser.take_back(symvers, build_dir, work) if user and hit is None else symvers,
                     staging / "module/Module.symvers")
    if ctx.signing_ready is not None and ctx.shell.prepared_kernel != f"{kver}/{arch}":
        # the transaction's signing was still being prepared when this build began
        ctx.signing_ready.wait()
        signing.prepare_kernel_and_signing(ctx, kver, arch)
        sign = ctx.shell.signing
    ready: list[tuple[BuiltModule, Path]] = []
    for m in wanted:
        built = Path(f"{build_dir}/{m.built_path}.ko")
        if m.built_path in cached:
            # a copy (the entry stays unsigned) where make would have left it, for upstream's
            # "Signing module" line; in root's own staging when the build user owns build/
            if user is not None:
                work.mkdir(mode=0o700, exist_ok=True)
                built = work / f"{m.index}-{m.built_name}.ko"
            built.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached[m.built_path], built)
        elif user is not None and built.is_file():
            built = builduser.take_back(built, build_dir, work)
        if not built.is_file():
            ctx.console.warn(f"{built} has disappeared")
            continue
        if m.strip and m.built_path not in cached:
            strip = "llvm-strip" if env.get("CC") == "clang" else "strip"
            try:
                run.run([strip, "-g", built], stdout=None)
            except run.ToolMissing:
                ctx.console.warn(f"{strip} not found: {built.name} keeps its debug symbols.")
        ready.append((m, built))
    if found is not None and found.key and hit is None and len(ready) == len(wanted):
        # kept before signing and compressing, so that one entry serves hosts with other keys
        cachestep.keep(ctx, found, {"module": module, "version": version, "kernel": kver, "arch": arch},
                       [Built(m.built_path, p) for m, p in ready], symvers if symvers.is_file() else None, build_log)
    for m, built in ready:
        # the fleet's modules come signed by its key, verified on the way in: kept as they are
        if sign is not None and sign.enabled and not (hit is not None and hit.signed):
            signing.sign_module(ctx, sign, built)
            ctx.tx.signed_with.setdefault(sign.cert, set()).add(f"{kver}/{arch}")
        elif hit is None or not hit.signed:
            ctx.tx.signed_with.setdefault("", set()).add(f"{kver}/{arch}")
    if found is not None and found.key and hit is None and len(ready) == len(wanted):
        cachestep.share(ctx, found, sign, {"module": module, "version": version, "kernel": kver, "arch": arch},
                        [Built(m.built_path, p) for m, p in ready], symvers if symvers.is_file() else None, build_log)
    for m, built in ready:
        result = built
        if compression is not Compression.none:
            result = _compress(ctx, compression, built) or built
        suffix = ".ko" + (compression.suffix if result is not built else "")
        shutil.copy2(result, staging / "module" / f"{m.dest_name}{suffix}")
    for m in wanted:
        if not any((staging / "module" / f"{m.dest_name}{s}").is_file()
                   for s in (".ko", ".ko" + compression.suffix)):
            raise DkmsError(7, f"Missing module '{m.dest_name}' in {staging}/module")
    shutil.rmtree(work, ignore_errors=True)
    if conf.build_depends_rebuild and not ctx.shell.force:
        # written before the final rename, so a built module always has them
        for dep in conf.build_depends:
            versions = [e.version for e in tree.status_entries(lay, dep, "", kver, arch)]
            if versions:
                newest = max(versions, key=version_sort_key)
                (staging / f".dep_{dep}").write_text(newest + "\n")
    os.chmod(staging, 0o755)
    op.advance("staged")
    try:
        os.rename(staging, base_dir)
    except OSError as e:
        raise DkmsError(7, f"do_build: final mv failed ({e.errno})") from e
    op.advance("placed")

    scripts.run_script(ctx, "post_build", conf.script("POST_BUILD"), module, version, logfile=build_log,
                       variables=variables, as_user=user)
    op.advance("post-build-done")
    try:
        # the build user could have swapped make.log for a link: only a regular file is kept
        if user is None or build_log.lstat().st_mode & 0o170000 == 0o100000:
            os.replace(build_log, base_dir / "log/make.log")
    except OSError:
        pass
    shutil.rmtree(build_dir, ignore_errors=True)
    return found


def _from_cache(entry: Entry, make_command: str, build_log: Path) -> int:
    """make.log as this build would have written it: the make output of the build that made
    the entry, under this build's command (upstream's suite and scripts read make.log).
    Where the modules came from is in the build record (status --json) instead."""
    try:
        text = (entry.path / "make.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    start = text.find("\nBuilding module(s)\n# command: ")
    start = text.find("\n", start + 1 + len("Building module(s)\n")) + 1 if start >= 0 else -1
    end = text.find("\n# exit code: ", start) if start > 0 else -1
    output = text[start:end] if 0 < start <= end else ""
    # no following links: with build_user, the build user owns the directory
    fd = os.open(build_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "a", encoding="utf-8", errors="surrogateescape") as log:
        log.write(f"\nBuilding module(s)\n# command: {make_command}\n{output}\n# exit code: 0\n"
                  f"# elapsed time: 00:00:00\n{steps.RULE}\n")
    return 0


def _mkdtemp(parent: Path, prefix: str) -> str:
    """mktemp -d with upstream's six random characters (its suite normalises exactly six)."""
    alphabet = string.ascii_letters + string.digits
    for _ in range(100):
        # os.urandom rather than secrets: the name only has to be unpredictable, and
        # secrets' import (hmac, hashlib) costs more than the rest of a build's start-up
        path = parent / (prefix + "".join(alphabet[b % len(alphabet)] for b in os.urandom(6)))
        try:
            path.mkdir(mode=0o700)
            return os.fspath(path)
        except FileExistsError:
            continue
    raise DkmsError(1, "Unable to make temporary directory.")
