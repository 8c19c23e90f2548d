"""The transaction matrix (tests/system/matrix.py) with every real client, on this Debian
12 machine (in a throwaway overlay of it) and in the cached Debian 13 root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import KERNELS, needs_kernel

from system.matrix import CLIENTS, STEPS, Kernels, expected_state, states
from system.overlay_helpers import in_overlay, needs_overlay
from system.roots import ROOTS, in_root, needs_root

pytestmark = [pytest.mark.kernel]

NEEDS = {
    "pacman": ("pacman", "bsdtar"),
    "rpm-macros": ("rpmbuild",),
    "rpm-triggers": ("rpmbuild",),
}


def _tools(client: str) -> pytest.MarkDecorator:
    missing = [t for t in NEEDS.get(client, ()) if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {' '.join(missing)}")


def check(client: str, out: str, err: str, rc: int, kernels: Kernels) -> None:
    assert rc == 0, out + err
    got = states(out)
    assert list(got) == [s for s, _ in STEPS], out + err
    for step, version in STEPS:
        assert got[step] == expected_state(version, kernels), f"{client}, after {step}:\n{out}\n{err}"


@needs_kernel
@needs_overlay
@pytest.mark.parametrize("client", [pytest.param(c, marks=_tools(c)) for c in CLIENTS])
def test_on_this_machine(client: str, tmp_path: Path) -> None:
    kernels = Kernels.of(Path("/"))
    # the kernel removed with the module: one with headers only where there is one
    kver = next((k for k in kernels.names if k not in kernels.with_dep), KERNELS[0])
    c = CLIENTS[client](tmp_path, kver)
    res = in_overlay(c.script(), timeout=1200)
    check(client, res.stdout, res.stderr, res.returncode, kernels)


@needs_root("trixie")
@pytest.mark.parametrize("client", [pytest.param(c, marks=_tools(c)) for c in CLIENTS])
def test_on_debian_13(client: str, tmp_path: Path) -> None:
    kernels = Kernels.of(ROOTS / "trixie")
    c = CLIENTS[client](tmp_path, kernels.names[-1])
    res = in_root("trixie", c.script(), share=(tmp_path,), timeout=1200)
    check(client, res.stdout, res.stderr, res.returncode, kernels)
