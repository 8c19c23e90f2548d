"""Unprivileged builds (``build_user`` in dkms-hooks.toml), as akmods does them.

The build directory is handed to the user; patches, PRE_BUILD, make and POST_BUILD run as
that user. Everything that needs root (signing with the MOK key, the dkms tree, installing)
stays with root, and root never works on a file in the user's directory in place: each
built module is first copied out, refusing links, so a build cannot trick root into
reading, signing or installing a file it could not reach itself."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.system.errors import DkmsError
from dkms_hooks.system.run import RunAs


def resolve(ctx: Context) -> RunAs | None:
    """The configured build user, or None to build as the caller."""
    name = ctx.hooks.build_user
    if not name:
        return None
    where = f"build_user in {ctx.layout.settings_toml}"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise DkmsError(1, f"The build user '{name}' ({where}) does not exist.") from None
    if os.geteuid() == entry.pw_uid:
        return None
    if os.geteuid() != 0:
        raise DkmsError(1, f"Building as '{name}' ({where}) needs root.")
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    return RunAs(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def hand_over(build_dir: Path, user: RunAs) -> None:
    """Give the freshly copied build directory (root's copy of the source) to the user."""
    for dirpath, dirs, files in os.walk(build_dir):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(dirpath, name), user.uid, user.gid)
    os.lchown(build_dir, user.uid, user.gid)


def take_back(built: Path, build_dir: Path, work_dir: Path) -> Path:
    """A root-owned copy of a module the user built, made without following links and only
    from inside the build directory."""
    real_dir = os.path.realpath(built.parent)
    inside = os.path.realpath(build_dir)
    if real_dir != inside and not real_dir.startswith(inside + os.sep):
        raise DkmsError(7, f"{built} is not inside the build directory {build_dir}.")
    try:
        fd = os.open(built, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise DkmsError(7, f"{built} cannot be taken from the build: {e.strerror}.") from e
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise DkmsError(7, f"{built} is not a regular file.")
        work_dir.mkdir(mode=0o700, exist_ok=True)
        copy = work_dir / built.name
        with open(copy, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return copy
