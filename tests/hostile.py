"""Helpers for hostile-input tests: a snapshot of everything under a directory (content
included), and the check every refusal must pass."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from conftest import Result

#: every exit code dkms can end with (upstream's, plus 70 for an internal error)
KNOWN_EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 21, 77, 101}


def snapshot(top: Path) -> dict[str, str]:
    """Each path under ``top`` with its type, mode and (for files) a hash of its content."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = os.fspath(p.relative_to(top))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = f"file {st.st_mode:o} " + hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = f"dir {st.st_mode:o}"
    return out


def assert_refused(res: Result, *, code: int | None = None, says: str = "") -> None:
    """Non-zero exit, an ``Error!`` line on stderr that says why, and no traceback."""
    assert res.returncode != 0, res.output
    if code is not None:
        assert res.returncode == code, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    errors = [line for line in res.stderr.splitlines() if "Error!" in line]
    assert errors, res.output
    if says:
        assert says in res.stderr, res.output
