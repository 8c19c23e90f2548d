"""``dkms install`` and ``dkms uninstall``: put built modules into the kernel's module
tree (keeping whatever they replace), and take them out again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dkms_hooks.model import tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.dkmsconf import BuiltModule, ModuleConf
from dkms_hooks.model.installed import (
    actual_dest_location,
    compare_versions,
    compressed_or_uncompressed,
    find_module,
    same_file,
    verinfo,
)
from dkms_hooks.model.kernel import Compression, ver_key
from dkms_hooks.ops import build, depmod, journal, scripts, steps, vermagic
from dkms_hooks.system import run
from dkms_hooks.system.errors import DkmsError


def module_suffix(ctx: Context, kver: str, arch: str) -> str:
    return ".ko" + ctx.kernel(kver, arch).compression(ctx.layout).suffix


def _obsolete(kver: str, obsolete_by: str) -> bool:
    obs = obsolete_by.split("-")
    my = kver.split("-")
    if ver_key(obs[0]) == ver_key(my[0]):
        if len(obs) < 2 or not obs[1]:
            return True
        mine = my[1] if len(my) > 1 else ""
        return ver_key(mine) >= ver_key(obs[1])
    return ver_key(my[0]) > ver_key(obs[0])


def version_sanity(ctx: Context, conf: ModuleConf, module: str, version: str, kver: str, arch: str,
                   dest_name: str) -> bool:
    """Refuse to replace a module the kernel already has at the same or a newer version."""
    console = ctx.console
    force = ctx.shell.force
    obsolete_by = conf.scalar("OBSOLETE_BY")
    if obsolete_by and not force and _obsolete(kver, obsolete_by):
        console.eprint("")
        console.eprint(f"Module has been obsoleted due to being included in kernel {obsolete_by}.")
        console.eprint(f"We will avoid installing for future kernels above {obsolete_by}.")
        console.eprint("You may override by specifying --force.")
        return False
    compression = ctx.kernel(kver, arch).compression(ctx.layout)
    suffix = ".ko" + compression.suffix
    found = find_module(ctx.layout.install_tree / kver, dest_name)
    if not found:
        return True
    if ctx.shell.force_version_override:
        return True
    kernels_module = found[0]
    dkms_module = compressed_or_uncompressed(
        ctx.layout.built_dir(module, version, kver, arch) / "module", dest_name, compression
    )
    cmp = compare_versions(kernels_module, dkms_module)
    if cmp == ">" and not force:
        console.error(
            f"Module version {verinfo(dkms_module)[0]} for {dest_name}{suffix}",
            f"is not newer than what is already found in kernel {kver} ({verinfo(kernels_module)[0]}).",
            "You may override by specifying --force.",
        )
        return False
    if cmp == "==" and not force:
        ver, src = verinfo(dkms_module)
        same_bytes = dkms_module is not None and same_file(kernels_module, dkms_module)
        if (ver + src).strip() or same_bytes:
            if ver:
                console.eprint(f"Module {kernels_module} already installed at version {ver}, "
                               "override by specifying --force")
            else:
                console.eprint(f"Module {kernels_module} already installed (unversioned module), "
                               "override by specifying --force")
            return False
    return True


def remove_empty_dirs(top: Path) -> None:
    """Remove every empty directory under ``top`` (``top`` included), deepest first."""
    for dirpath, _dirs, _files in sorted(os.walk(top), reverse=True):
        try:
            os.rmdir(dirpath)  # only empty ones go
        except OSError:
            pass


def _place(op: journal.Operation, src: Path, dest: Path, *, symlink: bool) -> None:
    """Copy (or link) src to dest through a temporary name in dest's directory, so dest is
    never half-written; a file it replaces is kept (hard-linked) until the install is done."""
    tmp = dest.with_name(f".{dest.name}.dkms-new")
    keep = dest.with_name(f".{dest.name}.dkms-old") if dest.exists() or dest.is_symlink() else None
    op.note(placed=[*op.data["placed"], [os.fspath(dest), os.fspath(keep) if keep else "", os.fspath(tmp)]])
    tmp.unlink(missing_ok=True)
    try:
        if symlink:
            os.symlink(src, tmp)
        else:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if keep is not None:
            keep.unlink(missing_ok=True)
            try:
                os.link(dest, keep, follow_symlinks=False)
            except OSError:
                shutil.copy2(dest, keep, follow_symlinks=False)
    except OSError:
        # a full disk leaves no partial file behind, and dest as it was
        tmp.unlink(missing_ok=True)
        if keep is not None:
            keep.unlink(missing_ok=True)
        raise
    op.advance("module-staged")
    os.replace(tmp, dest)
    op.advance("module-placed")


def _archive_original(op: journal.Operation, original: Path, backup_dir: Path) -> Path:
    backup_dir.mkdir(parents=True, exist_ok=True)
    origin = backup_dir / f"{original.name}.origin"
    target = backup_dir / original.name
    op.note(archived=[*op.data["archived"], [os.fspath(original), os.fspath(target), os.fspath(origin)]])
    tmp_origin = origin.with_name(f".{origin.name}.new")
    tmp_origin.write_text(f"{original}\n")
    os.replace(tmp_origin, origin)
    op.advance("original-saving")
    try:
        os.replace(original, target)
    except OSError:
        # another filesystem: copy in under a temporary name, then let go of the original
        tmp = backup_dir / f".{original.name}.new"
        shutil.copy2(original, tmp)
        os.replace(tmp, target)
        original.unlink()
    op.advance("original-saved")
    return target


def _roll_back(placed: list[tuple[Path, Path | None]], archived: list[tuple[Path, Path]]) -> None:
    """An install that failed half-way (a full disk): put back what it replaced or take out
    what it added, and put back what it archived, so the kernel keeps the modules it had."""
    for path, kept in placed:
        if kept is not None and kept.exists():
            os.replace(kept, path)
        else:
            path.unlink(missing_ok=True)
    for original, kept_original in archived:
        try:
            shutil.move(kept_original, original)
            kept_original.with_name(f"{kept_original.name}.origin").unlink(missing_ok=True)
        except OSError:
            pass  # still in original_module/: uninstall restores it from there
    for _original, kept_original in archived[:1]:
        # the module's original_module/ as it was (status reports the directory)
        for d in (kept_original.parent, kept_original.parent.parent, kept_original.parent.parent.parent):
            try:
                d.rmdir()
            except OSError:
                break


def drop_kept(placed: list[list[str]]) -> None:
    """The files an install replaced, kept until it was done."""
    for _dest, keep, tmp in placed:
        for leftover in (keep, tmp):
            if leftover:
                Path(leftover).unlink(missing_ok=True)


def _forced(ctx: Context, module: str) -> str:
    d = ctx.layout.forced_modules_dir
    if not d.is_dir():
        return ""
    words: list[str] = []
    for f in sorted(d.iterdir()):
        if f.exists():
            try:
                words += f.read_text(errors="replace").split()
            except OSError:
                pass
    for w in words:
        if w == module:
            return "force"
        if w == f"{module}_version-override":
            return "version-override"
    return ""


def do_install(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    """Install one built (or, first, build) module version for a kernel. The modules
    built against an older version of it are the caller's to rebuild (dependencies)."""
    lay = ctx.layout
    console = ctx.console
    if not tree.is_built(lay, module, version, kver, arch):
        build.do_build(ctx, module, version, kver, arch)
    base_dir = lay.built_dir(module, version, kver, arch)
    lib_tree = lay.install_tree / kver
    backup_dir = lay.original_module_dir(module, kver, arch)
    active = lay.active_link(module, kver, arch)

    forced = _forced(ctx, module)
    if forced == "force":
        ctx.shell.force = True
        console.print(f"Forcing installation of {module}")
    elif forced == "version-override":
        ctx.shell.force_version_override = True
        console.print(f"Forcing version override of {module}")

    if not lib_tree.exists():
        raise DkmsError(6, f"The directory {lib_tree} doesn't exist.",
                        "You cannot install a module onto a non-existent kernel.")
    compression = ctx.kernel(kver, arch).compression(lay)
    conf = read_conf(ctx, module, version, kver, arch, strict=True)
    wanted = [m for m in conf.modules if not conf.module_excluded(m.index)]
    for m in wanted:
        if compressed_or_uncompressed(base_dir / "module", m.dest_name, compression) is None:
            raise DkmsError(6, f"Missing module {m.dest_name} in {base_dir}/module")
    vermagic.refuse_foreign((compressed_or_uncompressed(base_dir / "module", m.dest_name, compression)
                             for m in wanted), kver)
    if tree.is_installed(lay, module, version, kver, arch):
        raise DkmsError(5, f"This module/version combo is already installed for kernel {kver} ({arch}).")
    if ctx.options.rpm_safe_upgrade:
        ctx.shell.force = True
    rc = scripts.run_script(ctx, "pre_install", conf.script("PRE_INSTALL"), module, version)
    if rc != 0 and not ctx.shell.force:
        raise DkmsError(101, "pre_install failed, aborting install.", "You may override by specifying --force.")

    with journal.operation(ctx, "install", module, version, kver, arch, lib_tree=os.fspath(lib_tree),
                           backup_dir=os.fspath(backup_dir), active=os.fspath(active), archived=[],
                           placed=[]) as op:
        _install_files(ctx, op, conf, wanted, module, version, kver, arch)
    if ctx.plugins is not None:
        ctx.plugins.module_installed(module, version, kver, arch)
    if (ctx.options.modprobe_on_install or ctx.framework.get("modprobe_on_install")) \
            and kver == os.uname().release:
        modprobe_present_devices(ctx)


def _install_files(ctx: Context, op: journal.Operation, conf: ModuleConf, wanted: list[BuiltModule], module: str,
                   version: str, kver: str, arch: str) -> None:
    lay = ctx.layout
    console = ctx.console
    base_dir = lay.built_dir(module, version, kver, arch)
    lib_tree = lay.install_tree / kver
    backup_dir = lay.original_module_dir(module, kver, arch)
    active = lay.active_link(module, kver, arch)
    compression = ctx.kernel(kver, arch).compression(lay)
    any_installed = False
    placed: list[tuple[Path, Path | None]] = []
    archived: list[tuple[Path, Path]] = []
    for m in wanted:
        if not version_sanity(ctx, conf, module, version, kver, arch, m.dest_name):
            continue
        if active.is_symlink():
            if compressed_or_uncompressed(backup_dir, m.dest_name, compression) is not None:
                console.print("An original module was already stored during a previous install")
        else:
            # Upstream's search order for the module this one replaces.
            candidates = [
                compressed_or_uncompressed(lib_tree / "extra", m.dest_name, compression),
                compressed_or_uncompressed(lib_tree / "updates", m.dest_name, compression),
                compressed_or_uncompressed(Path(f"{lib_tree}{m.dest_location}"), m.dest_name, compression),
                *find_module(lib_tree, m.dest_name),
            ]
            for original in candidates:
                if original is not None and original.is_file():
                    console.print(f"Found pre-existing {original}, archiving for uninstallation")
                    archived.append((original, _archive_original(op, original, backup_dir)))
                    break
        toinstall = compressed_or_uncompressed(base_dir / "module", m.dest_name, compression)
        assert toinstall is not None
        dest_dir = Path(f"{lib_tree}{m.dest_location}")
        console.print(f"Installing {dest_dir}/{toinstall.name}")
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            _place(op, toinstall, dest_dir / toinstall.name, symlink=ctx.options.symlink_modules)
        except OSError as e:
            _roll_back(placed, archived)
            raise DkmsError(6, f"Copying '{toinstall}' failed") from e
        kept = op.data["placed"][-1][1]
        placed.append((dest_dir / toinstall.name, Path(kept) if kept else None))
        any_installed = True
    if conf.num_modules > 0 and not any_installed:
        raise DkmsError(6, "Installation aborted.")

    tmp_link = active.with_name(f".{active.name}.new")
    tmp_link.unlink(missing_ok=True)
    os.symlink(f"{version}/{kver}/{arch}", tmp_link)
    os.replace(tmp_link, active)
    op.advance("linked")
    drop_kept(op.data["placed"])

    weak_modules(ctx, conf, module, kver, arch, add=True)
    scripts.run_script(ctx, "post_install", conf.script("POST_INSTALL"), module, version)
    ctx.tx.note_change(kver, [m.dest_name for m in wanted], remake_initrd=conf.scalar("REMAKE_INITRD")[:1] in "yY"
                    and bool(conf.scalar("REMAKE_INITRD")))
    if ctx.tx.depmod_batch is not None:
        ctx.tx.depmod_batch.add(kver)
        journal.depmod_owed(ctx, kver)
        rc = 0
    else:
        rc = steps.invoke_python(ctx, f"do_depmod {kver}", "Running depmod", lambda: depmod.do_depmod(ctx, kver))
    if rc != 0:
        do_uninstall(ctx, module, version, kver, arch)
        raise DkmsError(6, "Problems with depmod detected. Automatically uninstalling this module.",
                        "Install Failed (depmod problems). Module rolled back to built state.")
    op.advance("depmod-done")


def modprobe_present_devices(ctx: Context) -> None:
    """Load the new module for devices present now (only for the running kernel: its
    /sys is the live one, whatever the system root)."""
    aliases: set[str] = set()
    for dirpath, _d, files in os.walk("/sys/devices"):
        if "modalias" in files:
            try:
                aliases.add(Path(dirpath, "modalias").read_text().strip())
            except OSError:
                pass
    try:
        if aliases:
            run.run(["modprobe", "-a", "-b", "-q", *sorted(a for a in aliases if a)], stdout=None)
        if ctx.layout.modules_load_unit.is_file():
            run.run(["systemctl", "restart", "systemd-modules-load.service"], stdout=None)
    except run.ToolMissing as e:
        ctx.console.warn(f"{e.tool} not found: the new module is not loaded now, only at the next boot.")


def weak_modules(ctx: Context, conf: ModuleConf, module: str, kver: str, arch: str, *, add: bool) -> None:
    """RHEL and SUSE keep kABI-compatible modules linked into other kernels."""
    if conf.no_weak_modules or ctx.env.get("NO_WEAK_MODULES"):
        return
    root = ctx.layout.sysroot
    if ctx.distro.startswith("rhel"):
        tool = [os.fspath(root / "usr/sbin/weak-modules"), "--no-initramfs",
                "--add-modules" if add else "--remove-modules"]
    elif ctx.distro.startswith(("sles", "suse", "opensuse")):
        # upstream passes a literal "${kernelver}" here by a slip; the kernel is what the tool wants
        tool = [os.fspath(root / "usr/lib/module-init-tools/weak-modules2"),
                "--add-kernel-modules" if add else "--remove-kernel-modules", kver]
    else:
        return
    if not add and not any(e.state is tree.State.installed
                           for e in tree.built_entries(ctx.layout, module, conf.package_version)):
        return
    ctx.console.print("Adding linked weak modules..." if add else "Removing linked weak modules...")
    compression = ctx.kernel(kver, arch).compression(ctx.layout)
    listed = []
    for m in conf.modules:
        loc = actual_dest_location(ctx, m, module, kver, arch, compression) or ""
        p = compressed_or_uncompressed(Path(f"{ctx.layout.install_tree}/{kver}{loc}"), m.dest_name,
                                       compression)
        listed.append(os.fspath(p) if p else "")
    if not os.access(tool[0], os.X_OK):
        ctx.console.warn(f"{tool[0]} not found, kABI-compatible kernels are not linked.")
        return
    run.run(tool, input="\n".join(listed) + "\n", stdout=None)


def _rmdir_parents(base: Path, relative: str) -> None:
    rel = relative.lstrip("/")
    while rel:
        try:
            (base / rel).rmdir()
        except OSError:
            return
        rel = os.path.dirname(rel)


def do_uninstall(ctx: Context, module: str, version: str, kver: str, arch: str) -> None:
    lay = ctx.layout
    console = ctx.console
    backup_dir = lay.original_module_dir(module, kver, arch)
    console.print(f"Module {module}/{version} for kernel {kver} ({arch}):")
    compression = ctx.kernel(kver, arch).compression(lay)
    conf = read_conf(ctx, module, version, kver, arch)
    active = lay.active_link(module, kver, arch)
    if not tree.is_active(lay, module, version, kver, arch):
        console.print("This module version was INACTIVE for this kernel.")
        scripts.run_script(ctx, "post_remove", conf.script("POST_REMOVE"), module, version)
        _depmod_after_uninstall(ctx, kver)
        drop_empty_originals(ctx, module)
        return
    console.print("Before uninstall, this module version was ACTIVE on this kernel.")
    weak_modules(ctx, conf, module, kver, arch, add=False)
    plan = [[m.dest_name, actual_dest_location(ctx, m, module, kver, arch, compression) or "",
             m.declared_dest_location] for m in conf.modules]
    with journal.operation(ctx, "uninstall", module, version, kver, arch, plan=plan, compression=compression.value,
                           backup_dir=os.fspath(backup_dir), deleted=0, restored=0) as op:
        # the link goes first: from here on the module counts as uninstalled, and what is
        # left (deleting, restoring originals, depmod) is finished by recovery if need be
        active.unlink(missing_ok=True)
        op.advance("unlinked")
        uninstall_files(ctx, op)
        scripts.run_script(ctx, "post_remove", conf.script("POST_REMOVE"), module, version)
        ctx.tx.note_change(kver, [m.dest_name for m in conf.modules])
        _depmod_after_uninstall(ctx, kver)
        op.advance("depmod-done")
        drop_originals(ctx, module, kver, arch)
    if ctx.plugins is not None:
        ctx.plugins.module_removed(module, version, kver, arch)


def uninstall_files(ctx: Context, op: journal.Operation) -> None:
    """Delete the installed copies and put back the modules they replaced, one module at a
    time, recording each so that a second pass (recovery) never deletes a restored original."""
    lay = ctx.layout
    kver = op.kver
    lib_tree = lay.install_tree / kver
    compression = Compression(op.data["compression"])
    suffix = ".ko" + compression.suffix
    backup_dir = Path(op.data["backup_dir"])
    for i, (name, loc, declared) in enumerate(op.data["plan"]):
        if i >= op.data["deleted"]:
            if loc:
                ctx.console.print(f"Deleting {lay.install_tree}/{kver}{loc}/{name}{suffix}")
                for f in Path(f"{lib_tree}{loc}").glob(f"{name}.ko*"):
                    f.unlink(missing_ok=True)
                if ctx.distro.startswith(("debian", "ubuntu", "arch", "gentoo")) or not _rpm_owns(
                        ctx, lib_tree, loc):
                    _rmdir_parents(lib_tree, loc)
            else:
                ctx.console.print(f"Module {name}{suffix} was not found within {lay.install_tree}/{kver}/")
            op.advance("module-deleted", deleted=i + 1)
        if i >= op.data["restored"]:
            _restore_originals(ctx, name, backup_dir, kver, declared, compression)
            op.advance("originals-restored", restored=i + 1)


def _depmod_after_uninstall(ctx: Context, kver: str) -> None:
    if ctx.tx.depmod_batch is not None:
        # the transaction runs it once for the kernel; a crash before then leaves it owed
        ctx.tx.depmod_batch.add(kver)
        journal.depmod_owed(ctx, kver)
    else:
        steps.invoke_python(ctx, f"do_depmod {kver}", "Running depmod", lambda: depmod.do_depmod(ctx, kver))


def drop_originals(ctx: Context, module: str, kver: str, arch: str) -> None:
    backup_dir = ctx.layout.original_module_dir(module, kver, arch)
    if backup_dir.is_dir():
        ctx.console.print(f"Removing original module(s) from DKMS tree for kernel {kver} ({arch})")
        shutil.rmtree(backup_dir, ignore_errors=True)
        kdir = backup_dir.parent
        if kdir.is_dir() and not any(p.is_dir() for p in kdir.iterdir()):
            shutil.rmtree(kdir, ignore_errors=True)
    drop_empty_originals(ctx, module)


def drop_empty_originals(ctx: Context, module: str) -> None:
    originals = ctx.layout.module_dir(module) / "original_module"
    if originals.is_dir() and not any(p.is_dir() for p in originals.iterdir()):
        shutil.rmtree(originals, ignore_errors=True)


def _rpm_owns(ctx: Context, lib_tree: Path, loc: str) -> bool:
    if not run.which("rpm", ctx.env):
        return False
    return run.run(["rpm", "-qf", loc.lstrip("/")], cwd=lib_tree, stderr=run.DEVNULL).returncode == 0


def _restore_originals(ctx: Context, name: str, backup_dir: Path, kver: str, declared: str,
                       compression: Compression) -> None:
    console = ctx.console
    if backup_dir.is_dir():
        prefix = f"{ctx.layout.install_tree}/{kver}/"
        for origin in sorted(backup_dir.rglob(f"{name}.*.origin")):
            if not origin.is_file():
                continue
            original = origin.with_name(origin.name[: -len(".origin")])
            if not original.is_file():
                continue
            lines = origin.read_text(errors="surrogateescape").splitlines()
            location = lines[0] if lines else ""
            if location.startswith(prefix) and ".." not in Path(location).parts:
                console.print(f"Restoring archived original module {location}")
                Path(location).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(location).with_name(f".{Path(location).name}.dkms-restore")
                shutil.copy2(original, tmp)
                os.replace(tmp, location)
                original.unlink()
                origin.unlink(missing_ok=True)
            else:
                console.warn(f"Bad original location '{location}' in {origin}")
        remove_empty_dirs(backup_dir.parent)
    leftover = compressed_or_uncompressed(backup_dir, name, compression) if backup_dir.is_dir() else None
    if leftover is not None:
        # archived by an older dkms that wrote no .origin record
        console.print("Restoring archived original module")
        target = Path(f"{ctx.layout.install_tree}/{kver}{declared}")
        target.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(leftover, target / leftover.name)
        except OSError:
            pass
