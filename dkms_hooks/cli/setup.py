"""From argv to the run's context: the layout (DKMS_HOOKS_SYSROOT, --dkmstree...),
framework.conf and dkms-hooks.toml, the kernels and arches as upstream completes them, and
the checks upstream makes before any verb runs."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from dkms_hooks.cli import cmdline
from dkms_hooks.model import distro, safety, settings, tree
from dkms_hooks.model.context import Context, Shell
from dkms_hooks.model.kernel import version_sort_key
from dkms_hooks.model.paths import Layout
from dkms_hooks.ops import journal
from dkms_hooks.plugins.calls import PluginCalls
from dkms_hooks.system import run
from dkms_hooks.system.console import Console
from dkms_hooks.system.errors import DkmsError


def layout_from_env(env: dict[str, str]) -> Layout:
    """DKMS_HOOKS_SYSROOT (or dpkg's DPKG_ROOT, when dpkg runs maintainer scripts outside a
    chroot) names another root: its /etc/dkms, os-release and /boot are read, and the trees
    default to the ones inside it. For image builds, and tests that must not touch the host."""
    sysroot = Path(env.get("DKMS_HOOKS_SYSROOT") or env.get("DPKG_ROOT") or "/")
    tmp = Path(env.get("TMPDIR") or "/tmp")
    if sysroot == Path("/"):
        return Layout(sysroot=sysroot, tmp=tmp)
    return Layout(dkms_tree=sysroot / "var/lib/dkms", source_tree=sysroot / "usr/src",
                  install_tree=sysroot / "lib/modules", sysroot=sysroot, tmp=tmp)


def _ensure_system_skeleton(layout: Layout, parsed: cmdline.Parsed) -> None:
    """Acting as the system's dkms (root, real root, no relocated trees), make sure the
    drop-in directory for framework settings exists, as upstream's package ships it.
    Files other packages call (Debian's helpers) are the package's to lay, never ours."""
    if not is_system_dkms(layout, parsed):
        return
    d = layout.etc_dkms / "framework.conf.d"
    if not d.is_dir():
        try:
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError:
            pass


def is_system_dkms(layout: Layout, parsed: cmdline.Parsed) -> bool:
    return os.geteuid() == 0 and layout.sysroot == Path("/") and not parsed.trees


def build_context(parsed: cmdline.Parsed, console: Console, env: dict[str, str]) -> Context:
    layout = layout_from_env(env)
    _ensure_system_skeleton(layout, parsed)
    running = distro.running_distribution(layout)
    addon = env.get("ADDON_MODULES_DIR", "")
    if not addon and layout.module_init_tools.exists():
        res = run.run(["bash", "-c", '. "$1" >/dev/null 2>&1; printf %s "${ADDON_MODULES_DIR-}"', "bash",
                       layout.module_init_tools], env=env)
        addon = res.stdout
    defaults = {
        "dkms_tree": os.fspath(layout.dkms_tree),
        "source_tree": os.fspath(layout.source_tree),
        "install_tree": os.fspath(layout.install_tree),
        "tmp_location": os.fspath(layout.tmp),
    }
    framework = settings.read_framework(layout, settings.NONSIGNING, scope=defaults, env=env)
    trees = {k: framework.get(k) or defaults[k] for k in ("dkms_tree", "source_tree", "install_tree")}
    trees.update({k: v for k, v in parsed.trees.items()})
    layout = layout.with_trees(
        dkms_tree=Path(trees["dkms_tree"]),
        source_tree=Path(trees["source_tree"]),
        install_tree=Path(trees["install_tree"]),
        tmp=Path(framework.get("tmp_location") or layout.tmp),
    )
    o = dataclasses.replace(parsed.options, verbose=parsed.options.verbose or bool(framework.get("verbose")),
                            symlink_modules=parsed.options.symlink_modules or bool(framework.get("symlink_modules")))
    hooks = settings.load_hooks_settings(layout.settings_toml)
    jobs = o.parallel_jobs if o.parallel_jobs is not None else framework.get("parallel_jobs", "")
    if not jobs:
        # upstream asks nproc(1); `dkms conf` does too, so a pinned nproc shows in the values it
        # prints; everything else takes the same number from the CPU affinity, without a process
        cpus = settings.nproc(env) if o.action == "conf" else str(len(os.sched_getaffinity(0)))
        jobs = str(hooks.jobs) if hooks.jobs else cpus
    return Context(layout=layout, console=console, distro=running, env=env, framework=framework, options=o,
                   plugins=PluginCalls(None, running, layout), hooks=hooks, addon_modules_dir=addon,
                   parallel_jobs="" if jobs == "0" else jobs,
                   shell=Shell(force=o.force, force_version_override=o.force_version_override))


def _default_arch(ctx: Context, kernels: list[str]) -> str:
    if distro.is_rpm_family(ctx.distro) and kernels and run.which("rpm", ctx.env):
        owner = run.run(["rpm", "-qf", ctx.layout.install_tree / kernels[0]], stderr=run.DEVNULL)
        pkgs = [line for line in owner.stdout.splitlines() if "not owned" not in line and "kernel" in line]
        if pkgs:
            res = run.run(["rpm", "-q", "--queryformat", "%{ARCH}", pkgs[0]], stderr=run.DEVNULL)
            if res.returncode == 0 and res.stdout:
                return res.stdout
    return distro.machine_arch()


def setup_kernels(ctx: Context, action: str) -> Context:
    """The run's kernels and arches, as upstream's setup_kernels_arches completes them."""
    o = ctx.options
    kernels, arches = list(o.kernels), list(o.arches)
    if o.all and action != "status":
        lines = [f"{e.state} {e.module}/{e.version}/{e.kver}/{e.arch}"
                 for m, v in [(o.module, o.version)] for e in _built(ctx, m, v)]
        for line in sorted(lines, key=version_sort_key):
            ka = line.split("/", 2)[2]
            k, _, a = ka.rpartition("/")
            kernels.append(k)
            arches.append(a)
    # status and mok status look at every kernel unless given some
    if action not in ("status", "mok"):
        if not kernels and not o.all:
            kernels.append(os.uname().release)
        if not arches:
            arches.append(_default_arch(ctx, kernels))
    if len(arches) == 1 and len(kernels) > 1:
        arches += [arches[0]] * (len(kernels) - 1)
    if action not in ("status", "mok"):
        for i, k in enumerate(kernels):
            if not k:
                raise DkmsError(16, f"Empty kernelver[{i}]")
        for i, a in enumerate(arches):
            if not a:
                raise DkmsError(16, f"Empty arch[{i}]")
    return ctx.with_options(kernels=tuple(kernels), arches=tuple(arches))


def check_names(ctx: Context) -> None:
    """Ours: a module, version, kernel or arch name becomes a path component, so it must be one."""
    o = ctx.options
    named = [("kernel version", k) for k in o.kernels if k] + [("arch", a) for a in o.arches if a]
    if o.module and o.version:
        named = [("module name", o.module), ("module version", o.version), *named]
    for what, value in named:
        why = safety.bad_name(value)
        if why:
            raise DkmsError(1, f"Invalid {what}: {why}.")


def _built(ctx: Context, module: str, version: str) -> list[tree.Entry]:
    if not module or not version:
        return []
    return tree.built_entries(ctx.layout, module, version)


def have_one_kernel(ctx: Context, action: str) -> None:
    o = ctx.options
    if o.all:
        raise DkmsError(5, f"The action {action} does not support the --all parameter.")
    if len(o.kernels) != 1:
        if action in ("kernel_preinst", "kernel_postinst", "kernel_prerm"):
            raise DkmsError(4, f"The action {action} requires exactly one kernel version parameter on the "
                               "command line.")
        raise DkmsError(4, f"The action {action} does not support multiple kernel version parameters on the "
                           "command line.")


def check_root_for_install(ctx: Context) -> None:
    # Upstream demands root for any install; writing into a relocated install tree is
    # a sandbox or image build and needs no more than write access to it.
    if not ctx.layout.is_relocated_install_tree() and os.geteuid() != 0:
        raise DkmsError(1, "You must be root to use this command.")


def recover_if_needed(ctx: Context) -> None:
    """Before a verb or an event changes the trees (the caller holds the tree lock), finish
    or undo what a killed dkms left half done."""
    if journal.records(ctx):
        from dkms_hooks.transaction import recovery  # lazy: only when a record is left

        recovery.recover(ctx)
