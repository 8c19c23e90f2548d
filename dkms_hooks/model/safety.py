"""What names and relative paths taken from the command line, a dkms.conf or an archive may
be, so that every path built from them stays inside its tree."""

from __future__ import annotations

import re

# whitespace and control characters: they split shell words upstream evaluates and break the
# one-line-per-module status format
_UNPRINTABLE = re.compile(r"[\s\x00-\x1f\x7f]")


def shown(value: str) -> str:
    """``value`` quoted on one line, control characters escaped."""
    return repr(value)[1:-1].join("''")


def bad_name(value: str) -> str | None:
    """Why ``value`` cannot be one path component (a module, version, kernel or arch name,
    a module file name), or None when it can."""
    if value in (".", ".."):
        return f"{shown(value)} is not a name"
    if "/" in value:
        return f"{shown(value)} contains '/'"
    if _UNPRINTABLE.search(value):
        return f"{shown(value)} contains whitespace or control characters"
    return None


def climbs_out(relative: str) -> bool:
    """True when ``relative``, read below some directory, reaches above it (``..`` that
    outnumber the components before them). ``/kernel/../updates`` stays inside."""
    depth = 0
    for part in relative.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def bad_location(value: str) -> str | None:
    """Why ``value`` cannot be a directory below a tree (BUILT_MODULE_LOCATION,
    DEST_MODULE_LOCATION), or None when it can."""
    if climbs_out(value):
        return f"{shown(value)} points outside its tree"
    if re.search(r"[\x00-\x1f\x7f]", value):
        return f"{shown(value)} contains control characters"
    return None
