"""The build cache on one host: real builds against real headers, counted makes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import write_module

pytestmark = [pytest.mark.kernel, needs_kernel]


def counting_make(sb: Sandbox, base: Path) -> Path:
    """Put a ``make`` on PATH that notes each call, so a test can tell a cache hit."""
    bindir = base / "countbin"
    bindir.mkdir(exist_ok=True)
    count = base / "makes"
    count.touch()
    (bindir / "make").write_text(f'#!/bin/sh\necho "$*" >> "{count}"\nexec /usr/bin/make "$@"\n')
    (bindir / "make").chmod(0o755)
    sb.env["PATH"] = f"{bindir}:{sb.env['PATH']}"
    return count


def makes(count: Path) -> int:
    # kbuild runs make recursively; the build's own call is the one dkms made (-C headers)
    return sum(1 for line in count.read_text().splitlines() if "KERNELRELEASE=" in line)


def record(sb: Sandbox, name: str, kver: str) -> dict[str, object]:
    path = sb.dkms_tree / f".dkms-hooks/builds/{name}/1.0/{kver}-x86_64.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def entries(sb: Sandbox) -> list[Path]:
    return sorted((sb.dkms_tree / ".dkms-hooks/cache").glob("*/*/manifest.json"))


@pytest.fixture
def setup(sandbox: Sandbox, tmp_path: Path) -> tuple[Sandbox, Path, str]:
    kver = KERNELS[0]
    sandbox.add_kernel(kver)
    write_module(sandbox.source_tree, "cachy")
    sandbox.dkms("add", "cachy/1.0", check=True)
    return sandbox, counting_make(sandbox, tmp_path), kver


def test_a_rebuild_with_the_same_inputs_comes_from_the_cache(setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    sb.dkms("install", "cachy/1.0", "-k", kver, check=True)
    first = (sb.install_tree / kver / "updates/dkms/cachy.ko").read_bytes()
    assert makes(count) == 1 and record(sb, "cachy", kver)["source"] == "make"
    assert len(entries(sb)) == 1
    sb.dkms("remove", "cachy/1.0", "--all", check=True)
    sb.dkms("add", "cachy/1.0", check=True)
    res = sb.dkms("install", "cachy/1.0", "-k", kver, check=True)
    assert makes(count) == 1, "the second build ran make"
    # upstream's lines, unchanged; the module signed here, as after any build
    assert "Building module(s)... done." in res.stdout
    assert f"Signing module {sb.dkms_tree}/cachy/1.0/build/cachy.ko" in res.stdout
    second = sb.install_tree / kver / "updates/dkms/cachy.ko"
    assert second.read_bytes() == first
    info = subprocess.run(["modinfo", str(second)], capture_output=True, text=True, check=True).stdout
    assert f"vermagic:       {kver} " in info and "signer:" in info
    assert record(sb, "cachy", kver)["source"] == "cache"
    status = json.loads(sb.dkms("status", "--json", check=True).stdout)
    assert "cache" in json.dumps(status)
    log = (sb.dkms_tree / f"cachy/1.0/{kver}/x86_64/log/make.log").read_text()
    assert "# command: make " in log and "CC [M]" in log and "# elapsed time: 00:00:00" in log


def test_changed_source_or_directive_misses(setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    sb.dkms("unbuild", "cachy/1.0", "-k", kver, check=True)
    sb.dkms("build", "cachy/1.0", "-k", kver, "--directive=EXTRA=1", check=True)
    assert makes(count) == 2, "a new --directive must not hit"
    sb.dkms("unbuild", "cachy/1.0", "-k", kver, check=True)
    src = sb.source_tree / "cachy-1.0/cachy.c"
    src.write_text(src.read_text() + "\n/* changed */\n")
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    assert makes(count) == 3, "a changed source must not hit"
    sb.dkms("unbuild", "cachy/1.0", "-k", kver, check=True)
    src.chmod(0o600)
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    assert makes(count) == 4, "a changed mode must not hit"
    sb.dkms("unbuild", "cachy/1.0", "-k", kver, check=True)
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    assert makes(count) == 4
    assert len(entries(sb)) == 4


def test_a_tampered_entry_is_refused_and_rebuilt(setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    sb.dkms("unbuild", "cachy/1.0", "-k", kver, check=True)
    (manifest,) = entries(sb)
    ko = manifest.parent / "0.ko"
    data = bytearray(ko.read_bytes())
    data[-100] ^= 0xFF
    ko.write_bytes(bytes(data))
    res = sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    assert "refused: 0.ko does not match its manifest's hash; building." in res.stderr
    assert makes(count) == 2
    assert "refused" in str(record(sb, "cachy", kver)["cache_note"])
    # the refused entry is gone and the new build took its place
    (again,) = entries(sb)
    assert (again.parent / "0.ko").read_bytes() != bytes(data)


def test_a_module_whose_symbol_crcs_do_not_match_the_kernel_is_refused(setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    sb.dkms("unbuild", "cachy/1.0", "-k", kver, check=True)
    (manifest,) = entries(sb)
    ko = manifest.parent / "0.ko"
    data = bytearray(ko.read_bytes())
    # module_layout's CRC sits in __versions just before its name: change it, and re-hash
    at = data.index(b"module_layout\0") - 8
    data[at] ^= 0x01
    ko.write_bytes(bytes(data))
    m = json.loads(manifest.read_text())
    m["files"]["0.ko"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest.write_text(json.dumps(m))
    res = sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    assert "wants module_layout with CRC" in res.stderr
    assert makes(count) == 2


def test_the_cache_can_be_turned_off(setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    (sb.etc / "dkms-hooks.toml").write_text("[cache]\nenabled = false\n")
    for _ in range(2):
        sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
        sb.dkms("unbuild", "cachy/1.0", "-k", kver, check=True)
    assert makes(count) == 2
    assert entries(sb) == []


def test_cache_status_prune_and_clear(setup: tuple[Sandbox, Path, str]) -> None:
    sb, _count, kver = setup
    write_module(sb.source_tree, "other")
    sb.dkms("add", "other/1.0", check=True)
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    sb.dkms("build", "other/1.0", "-k", kver, check=True)
    status = json.loads(sb.dkms("cache", "status", "--json", check=True).stdout)
    assert status["enabled"] and sorted(e["module"] for e in status["entries"]) == ["cachy", "other"]
    text = sb.dkms("cache", "status", check=True).stdout
    assert "2 entries" in text and "cachy/1.0" in text
    # least recently used first: cachy's entry is older
    old = next(e for e in entries(sb) if json.loads(e.read_text())["module"] == "cachy")
    os.utime(old, (1, 1))
    one = max(int(e["size"]) for e in status["entries"])
    (sb.etc / "dkms-hooks.toml").write_text(f"[cache]\nmax_size = {one}\n")
    assert "Pruned 1 entries" in sb.dkms("cache", "prune", check=True).stdout
    assert [json.loads(e.read_text())["module"] for e in entries(sb)] == ["other"]
    assert "Removed 1 entries" in sb.dkms("cache", "clear", check=True).stdout
    assert entries(sb) == []
    res = sb.dkms("cache", "frobnicate")
    assert res.returncode == 2 and "Unknown cache action" in res.stderr


def test_the_event_summary_says_where_a_module_came_from(setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    (sb.etc / "dkms-hooks.toml").write_text("initramfs = \"none\"\n")
    res = sb.event("apt", "headers-postinst", kver)
    assert res.returncode == 0, res.output
    assert f"installed  cachy/1.0, {kver}\n" in res.stdout
    sb.dkms("remove", "cachy/1.0", "--all", check=True)
    sb.dkms("add", "cachy/1.0", check=True)
    res = sb.event("apt", "headers-postinst", kver)
    assert f"installed  cachy/1.0, {kver} (from this host's build cache)\n" in res.stdout, res.stdout
    assert makes(count) == 1


def test_a_cache_that_cannot_be_written_never_fails_the_build(setup: tuple[Sandbox, Path, str]) -> None:
    sb, _count, kver = setup
    (sb.etc / "in-the-way").write_text("a file where the cache's directory should be\n")
    (sb.etc / "dkms-hooks.toml").write_text('[cache]\npath = "/etc/dkms/in-the-way/cache"\n')
    res = sb.dkms("install", "cachy/1.0", "-k", kver)
    assert res.returncode == 0, res.output
    assert "Warning: build cache: could not keep this build" in res.stderr
    assert (sb.install_tree / kver / "updates/dkms/cachy.ko").is_file()


def test_a_build_depends_module_is_keyed_and_checked_against_its_dependency(
        setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    base_c = "int base_fn(int x) { return x + 1; }\nEXPORT_SYMBOL(base_fn);\n"
    write_module(sb.source_tree, "base", extra_c=base_c)
    conf = ('PACKAGE_NAME="top"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="top"\n'
            'DEST_MODULE_LOCATION[0]="/updates"\nBUILD_DEPENDS="base"\n'
            'MAKE[0]="make -C ${kernel_source_dir} M=${dkms_tree}/top/1.0/build '
            'KBUILD_EXTRA_SYMBOLS=${dkms_tree}/base/1.0/${kernelver}/${arch}/module/Module.symvers"\n')
    write_module(sb.source_tree, "top", conf=conf, extra_c="extern int base_fn(int);\n"
                 "static int __init use(void) { return base_fn(0) - 1; }\n")
    for m in ("base", "top"):
        sb.dkms("add", f"{m}/1.0", check=True)
        sb.dkms("install", f"{m}/1.0", "-k", kver, check=True)
    assert makes(count) == 2
    sb.dkms("remove", "top/1.0", "--all", check=True)
    sb.dkms("add", "top/1.0", check=True)
    sb.dkms("install", "top/1.0", "-k", kver, check=True)
    assert makes(count) == 2, "top's rebuild against the same base must hit"
    assert record(sb, "top", kver)["source"] == "cache"
    # base's export changes type (its CRC changes): top is built again
    sb.dkms("remove", "base/1.0", "--all", check=True)
    src = sb.source_tree / "base-1.0/base.c"
    src.write_text(src.read_text().replace("int base_fn(int x)", "long base_fn(long x)"))
    sb.dkms("add", "base/1.0", check=True)
    sb.dkms("install", "base/1.0", "-k", kver, check=True)
    sb.dkms("remove", "top/1.0", "--all", check=True)
    sb.dkms("add", "top/1.0", check=True)
    sb.dkms("install", "top/1.0", "-k", kver, check=True)
    assert makes(count) == 4
    assert record(sb, "top", kver)["source"] == "make"


@pytest.mark.skipif(len(KERNELS) < 2, reason="needs two kernels with headers")
def test_a_module_built_for_another_kernel_is_refused(setup: tuple[Sandbox, Path, str]) -> None:
    sb, count, kver = setup
    other = KERNELS[1]
    sb.add_kernel(other)
    sb.dkms("build", "cachy/1.0", "-k", kver, check=True)
    sb.dkms("build", "cachy/1.0", "-k", other, check=True)
    sb.dkms("unbuild", "cachy/1.0", "-k", other, check=True)
    by_kernel = {json.loads(m.read_text())["kernel"]: m for m in entries(sb)}
    # the other kernel's entry now holds this kernel's module, with a matching manifest
    mine = (by_kernel[kver].parent / "0.ko").read_bytes()
    target = by_kernel[other]
    (target.parent / "0.ko").write_bytes(mine)
    m = json.loads(target.read_text())
    m["files"]["0.ko"] = hashlib.sha256(mine).hexdigest()
    target.write_text(json.dumps(m))
    res = sb.dkms("build", "cachy/1.0", "-k", other, check=True)
    assert f"refused: cachy.ko was built for kernel {kver}, not {other}; building." in res.stderr
    assert makes(count) == 3
