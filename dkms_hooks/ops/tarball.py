"""mktarball and ldtarball: a module's source and/or built binaries as one archive.

Loading refuses members that would land outside the extraction directory (absolute
paths, ``..``, links pointing out, devices) and archives that unpack to more than
MAX_UNPACKED; members are streamed to disk one by one, never held in memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dkms_hooks.model import safety, tree
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.ops import journal
from dkms_hooks.ops.add import add_source_tree
from dkms_hooks.ops.files import aside_name
from dkms_hooks.system import run
from dkms_hooks.system.compat import StrEnum
from dkms_hooks.system.errors import DkmsError


def make_tarball(ctx: Context) -> None:
    o = ctx.options
    lay = ctx.layout
    module, version = o.module, o.version
    kver0 = o.kernels[0] if o.kernels else ""
    arch0 = o.arches[0] if o.arches else ""
    conf = read_conf(ctx, module, version, kver0, arch0)
    console = ctx.console
    with tempfile.TemporaryDirectory(prefix="dkms.", dir=lay.tmp) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "dkms_main_tree").mkdir()
        if o.source_only:
            kernel_list = "source-only"
        else:
            parts = []
            for k, a in zip(o.kernels, o.arches):
                built = lay.built_dir(module, version, k, a)
                if not built.is_dir():
                    raise DkmsError(6, f"No modules built for {k} ({a}).",
                                    "Modules must already be in the built state before using mktarball.")
                console.print(f"Marking modules for {k} ({a}) for archiving...")
                parts.append(f"kernel{k}-{a}")
                dest = tmp / "dkms_main_tree" / k / a
                shutil.copytree(built, dest, symlinks=True)
            kernel_list = "-".join(parts)
        source_dir = lay.source_link(module, version)
        if o.binaries_only:
            console.print("")
            console.print("Creating tarball structure to specifically accommodate binaries.")
            bin_dir = tmp / "dkms_binaries_only"
            bin_dir.mkdir()
            (bin_dir / "PACKAGE_NAME").write_text(module + "\n")
            (bin_dir / "PACKAGE_VERSION").write_text(version + "\n")
            src_conf = Path(o.conf) if o.conf else source_dir / "dkms.conf"
            if src_conf.is_file():
                shutil.copy2(src_conf, bin_dir / "dkms.conf")
        else:
            console.print("")
            console.print(f"Marking {source_dir} for archiving...")
            shutil.copytree(os.path.realpath(source_dir), tmp / "dkms_source_tree", symlinks=True)
        if len(kernel_list) + 1 > 200:
            kernel_list = "manykernels"
        name = f"{module}-{version}-{kernel_list}.dkms.tar.gz"
        dest_dir = f"{lay.version_dir(module, version)}/tarball/"
        if o.archive:
            name = os.path.basename(o.archive)
            if os.path.dirname(o.archive) and "/" in o.archive:
                dest_dir = o.archive.rsplit("/", 1)[0]
        console.print("")
        console.print(f"Tarball location: {dest_dir}/{name}")
        try:
            Path(dest_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DkmsError(9, f"Missing write permissions for {dest_dir}.") from e
        if not os.access(dest_dir, os.W_OK):
            raise DkmsError(9, f"Missing write permissions for {dest_dir}.")
        final = Path(dest_dir) / name
        # tar -a picks the compression from the name, so the temporary name keeps the suffix
        partial = final.with_name(f".partial.{name}")
        res = run.run(["tar", "-C", tmp, "-caf", partial, "."], stderr=run.DEVNULL)
        if res.returncode != 0:
            partial.unlink(missing_ok=True)
            raise DkmsError(6, "Failed to make tarball.")
        os.replace(partial, final)
        del conf  # read for its checks (and --directive echo), as upstream does


#: an archive that unpacks to more is refused before it fills the disk (a module's source
#: with binaries for a few kernels is far smaller)
MAX_UNPACKED = 4 << 30
MAX_MEMBERS = 100_000
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@contextlib.contextmanager
def _open_stream(archive: Path) -> Iterator[tarfile.TarFile]:
    """The archive as a stream of members, read once from the start: nothing is held in
    memory beyond the member being written."""
    with open(archive, "rb") as f:
        magic = f.read(4)
    if magic == _ZSTD_MAGIC:
        with run.pipe_from(["zstd", "-dc", "--", archive]) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tf:
            yield tf
    else:
        with tarfile.open(archive, "r|*") as tf:
            yield tf


def _refusal(member: tarfile.TarInfo) -> str | None:
    name = member.name
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts:
        return f"member {safety.shown(name)} points outside the archive"
    if member.issym() or member.islnk():
        target = member.linkname
        base = Path(name).parent if member.issym() else Path()
        if target.startswith("/") or safety.climbs_out(os.fspath(base / target)):
            return f"link {safety.shown(name)} -> {safety.shown(target)} points outside the archive"
    if member.isdev() or member.isfifo():
        return f"member {safety.shown(name)} is a device or fifo"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return f"member {safety.shown(name)} is not a file, directory or link"
    return None


def _extract(ctx: Context, archive: Path, dest: Path) -> None:
    """Unpack member by member, each checked before it is written; a refusal leaves only
    the temporary directory, which the caller removes."""
    total = count = 0
    try:
        with _open_stream(archive) as tf:
            for member in tf:
                count += 1
                total += member.size if member.isreg() else 0
                why = _refusal(member)
                if why is None and total > MAX_UNPACKED:
                    why = f"it unpacks to more than {MAX_UNPACKED >> 30} GiB"
                if why is None and count > MAX_MEMBERS:
                    why = f"it has more than {MAX_MEMBERS} members"
                if why:
                    raise DkmsError(3, f"Tarball {archive} cannot be unpacked safely: {why}.")
                _extract_member(tf, member, dest)
    except (tarfile.TarError, OSError) as e:
        raise DkmsError(3, f"Tarball {archive} cannot be unpacked safely: {e}") from e


def _extract_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """One member, as tarfile's "data" filter would (after our own checks of its name and
    kind): no owner from the archive, no setuid, setgid or sticky bit, no write bit for
    group and others. Pythons before the filter came (3.12, and the 3.9-3.11 security
    releases) get the same by hand."""
    if hasattr(tarfile, "data_filter"):
        tf.extract(member, dest, filter="data")
        return
    tf.extract(member, dest, set_attrs=False)
    if member.isreg() or member.isdir():
        os.chmod(dest / member.name, member.mode & 0o755)


def _check_binaries(archive: Path, kdir: Path, adir: Path) -> None:
    """Kernel and arch directory names become paths in the dkms tree, and built modules are
    copied to the kernel: no odd names, no links."""
    why = safety.bad_name(kdir.name) or safety.bad_name(adir.name)
    if why is None and (kdir.is_symlink() or adir.is_symlink()):
        why = f"{safety.shown(kdir.name)}/{safety.shown(adir.name)} under dkms_main_tree is a link"
    for dirpath, dirs, files in os.walk(adir):
        for entry in dirs + files:
            if why is None and os.path.islink(os.path.join(dirpath, entry)):
                why = f"{safety.shown(entry)} under dkms_main_tree is a link"
    if why:
        raise DkmsError(3, f"Tarball {archive} cannot be unpacked safely: {why}.")


class Loaded(StrEnum):
    #: a source tree is in place: the caller adds it
    source = "source"
    #: binaries only, whose source is not on this system: nothing more is added
    binaries = "binaries"
    #: an .rpm, installed with rpm: the caller runs autoinstall, as upstream does
    package = "package"


def load_tarball(ctx: Context, op: journal.Operation | None = None) -> tuple[Loaded, str, str]:
    """Upstream's load_tarball: what was loaded, and the module name and version it found
    (empty for an .rpm). ``op`` records what it puts into the trees, so that an
    interrupted ldtarball is undone."""
    o = ctx.options
    lay = ctx.layout
    console = ctx.console
    archive = Path(o.archive)
    if not o.archive or not archive.exists():
        raise DkmsError(2, f"{o.archive} does not exist.")
    if o.archive.endswith(".rpm"):
        if run.run(["rpm", "-Uvh", archive], stdout=None).returncode == 0:
            return Loaded.package, "", ""
        raise DkmsError(9, f"Unable to install {o.archive} using rpm.",
                        "Check to ensure that your system can install .rpm files.")
    with tempfile.TemporaryDirectory(prefix="dkms.", dir=lay.tmp) as tmp_name:
        tmp = Path(tmp_name)
        _extract(ctx, archive, tmp)
        if not (tmp / "dkms_main_tree").is_dir():
            confs = sorted(tmp.rglob("dkms.conf"))
            if not confs:
                raise DkmsError(3, "Tarball does not appear to be a correctly formed DKMS archive. "
                                   "No dkms.conf found within it.")
            return (Loaded.source, *add_source_tree(ctx, os.fspath(confs[0].parent), op=op))
        found = ""
        name = version = ""
        for loc in ("dkms_source_tree", "dkms_binaries_only"):
            conf_path = tmp / loc / "dkms.conf"
            if not conf_path.is_file():
                continue
            conf = read_conf(ctx, o.module, o.version, o.kernels[0] if o.kernels else "",
                                 o.arches[0] if o.arches else "", os.fspath(conf_path))
            name, version = conf.scalar("PACKAGE_NAME"), conf.scalar("PACKAGE_VERSION")
            if not (name and version):
                console.eprint("")
                console.eprint("Malformed dkms.conf, refusing to load.")
                continue
            if tree.is_added(lay, name, version) and not ctx.shell.force:
                raise DkmsError(8, f"{name}/{version} is already added!", "Aborting.")
            found = loc
            break
        if not found:
            raise DkmsError(7, "No valid dkms.conf in dkms_source_tree or dkms_binaries_only.",
                            f"{o.archive} is not a valid DKMS tarball.")
        for kdir in (tmp / "dkms_main_tree").iterdir():
            for adir in kdir.iterdir() if kdir.is_dir() else []:
                _check_binaries(archive, kdir, adir)
        if op is not None:
            op.module, op.version = name, version
            op.note(version_dir=os.fspath(lay.version_dir(name, version)),
                    version_dir_existed=lay.version_dir(name, version).is_dir(),
                    module_dir_existed=lay.module_dir(name).is_dir())
        console.print("")
        console.print(f"Loading tarball for {name}/{version}")
        if found == "dkms_source_tree":
            add_source_tree(ctx, os.fspath(tmp / "dkms_source_tree"), op=op)
        elif not lay.source_dir(name, version).is_dir():
            source_dir = lay.source_link(name, version)
            console.print(f"Creating {source_dir}")
            source_dir.mkdir(parents=True, exist_ok=True)
            console.print(f"Copying dkms.conf to {source_dir} ...")
            shutil.copy2(tmp / "dkms_binaries_only/dkms.conf", source_dir / "dkms.conf")
        for kdir in sorted((tmp / "dkms_main_tree").iterdir()):
            for adir in sorted(kdir.iterdir()) if kdir.is_dir() else []:
                if not adir.is_dir():
                    continue
                dest = lay.built_dir(name, version, kdir.name, adir.name)
                if dest.is_dir() and not ctx.shell.force:
                    console.warn(f"{dest} already exists. Skipping...")
                    continue
                console.print(f"Loading {dest}...")
                _load_built(op, adir, dest)
        if found != "dkms_binaries_only" or lay.source_dir(name, version).is_dir():
            return Loaded.source, name, version
        return Loaded.binaries, name, version


def _load_built(op: journal.Operation | None, src: Path, dest: Path) -> None:
    """Copy a built directory in under a temporary name and rename it into place; one it
    replaces (--force) is kept aside until the whole ldtarball is done."""
    staging = dest.with_name(f".{dest.name}.loading")
    aside = aside_name(dest)
    if op is not None:
        op.note(loaded=[*op.data.get("loaded", []),
                        [os.fspath(dest), os.fspath(staging), os.fspath(aside), dest.is_dir()]])
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging, symlinks=True)
    if op is not None:
        op.advance("built-staged")
    shutil.rmtree(aside, ignore_errors=True)
    if dest.is_dir():
        os.rename(dest, aside)
    os.rename(staging, dest)
    if op is None:
        shutil.rmtree(aside, ignore_errors=True)
    else:
        op.advance("built-placed")


def drop_asides(op: journal.Operation) -> None:
    """What an ldtarball replaced, once it is done."""
    for _dest, staging, aside, _existed in op.data.get("loaded", []):
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
    for key in ("source_tmp", "source_aside"):
        if op.data.get(key):
            shutil.rmtree(op.data[key], ignore_errors=True)
