"""Small file-tree moves the steps share: where a directory goes on its way out, and
pruning what a step left empty."""

from __future__ import annotations

from pathlib import Path


def aside_name(path: Path) -> Path:
    """Where a directory goes on its way out: a dot name beside it, which no glob of the
    tree matches."""
    return path.with_name(f".{path.name}.dkms-del")


def prune_empty_parents(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents while they are empty, up to ``stop`` (kept)."""
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
