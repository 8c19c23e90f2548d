"""Status answers from the tree and a cache of what it needs from each dkms.conf; a changed
dkms.conf, override file or kernel config is read again."""

from __future__ import annotations

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel

pytestmark = [pytest.mark.kernel, needs_kernel]


def test_cache_is_used_and_invalidated(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    src = sandbox.add_source(EXAMPLE)
    sandbox.dkms("install", "dkms_hooks_example/1.0", "-k", k, check=True)
    line = f"dkms_hooks_example/1.0, {k}, x86_64: installed\n"
    assert sandbox.dkms("status").stdout == line
    cache = sandbox.dkms_tree / ".dkms-hooks/status-cache.json"
    assert cache.is_file()
    # served from the cache: even with bash unusable, status still answers
    fake = sandbox.root / "nobash"
    fake.mkdir()
    (fake / "bash").write_text("#!/bin/sh\nexit 99\n")
    (fake / "bash").chmod(0o755)
    res = sandbox.dkms("status", env={"PATH": f"{fake}:{sandbox.env['PATH']}"})
    assert res.stdout == line
    # the dkms.conf changes: read again, and the answer follows it
    conf = src / "dkms.conf"
    conf.write_text(conf.read_text() + 'DEST_MODULE_NAME[0]="renamed"\n')
    assert sandbox.dkms("status").stdout == line.replace(
        "installed\n", "installed (Built modules are missing in the kernel modules folder)\n")
    # an override file counts as much as the dkms.conf itself
    (sandbox.etc / "dkms_hooks_example.conf").write_text('DEST_MODULE_NAME[0]="dkms_hooks_example"\n')
    assert sandbox.dkms("status").stdout == line
