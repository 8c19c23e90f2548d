"""Kbuild's compiler probes answered once per transaction: the shim against a fake compiler
that counts its runs, and real builds whose modules are byte for byte the ones built without
(all but the BTF that pahole orders differently from one build to the next)."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import write_module

from dkms_hooks.model import modinfo
from dkms_hooks.ops.ccprobe import ProbeCache

FAKE_CC = """#!/bin/sh
echo "$PWD $*" >> {calls}
out=
prev=
for a do [ "$prev" = -o ] && out=$a; prev=$a; done
echo "warning from the compiler" >&2
case " $* " in *" -fbad "*) exit 1;; esac
[ -n "$out" ] && echo "object for $*" > "$out"
echo "stdout of the compiler"
exit 0
"""


@pytest.fixture
def fake(tmp_path: Path):  # type: ignore[no-untyped-def]
    bindir = tmp_path / "toolchain"
    bindir.mkdir()
    calls = tmp_path / "calls"
    cc = bindir / "fakecc"
    cc.write_text(FAKE_CC.format(calls=calls))
    cc.chmod(0o755)
    cache = ProbeCache()
    own = tmp_path / "build"
    own.mkdir()
    env = cache.env({"CC": "fakecc", "PATH": f"{bindir}:{os.environ['PATH']}"}, own, None)
    yield env, calls, own, tmp_path
    cache.close()
    assert not cache.root.exists()


def _cc(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["fakecc", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_a_probe_runs_once_and_is_replayed_whole(fake) -> None:  # type: ignore[no-untyped-def]
    env, calls, own, tmp = fake
    first = tmp / "a.o"
    second = tmp / "b.o"
    one = _cc(env, "-Werror", "-fgood", "-c", "-x", "c", "/dev/null", "-o", str(first), cwd=tmp)
    two = _cc(env, "-Werror", "-fgood", "-c", "-x", "c", "/dev/null", "-o", str(second), cwd=tmp)
    assert len(calls.read_text().splitlines()) == 1
    assert (one.returncode, one.stdout, one.stderr) == (two.returncode, two.stdout, two.stderr)
    assert (one.returncode, one.stdout, one.stderr) == (0, "stdout of the compiler\n", "warning from the compiler\n")
    assert second.read_bytes() == first.read_bytes()
    # a refused flag is refused again without asking, and leaves no object behind
    for out in ("c.o", "d.o"):
        res = _cc(env, "-Werror", "-fbad", "-c", "-x", "c", "/dev/null", "-o", str(tmp / out), cwd=tmp)
        assert res.returncode == 1
        assert not (tmp / out).exists()
    assert len(calls.read_text().splitlines()) == 2


def test_what_is_not_a_probe_always_reaches_the_compiler(fake) -> None:  # type: ignore[no-untyped-def]
    env, calls, own, tmp = fake
    (tmp / "x.c").write_text("int x;\n")
    other = tmp / "elsewhere"
    other.mkdir()
    runs = [
        (["-c", "x.c", "-o", "x.o"], tmp),  # a real compile
        (["-c", "x.c", "-o", "x.o"], tmp),
        ([f"-I{own}/include", "-c", "-x", "c", "/dev/null", "-o", "p.o"], tmp),  # names the build's own tree
        ([f"-I{own}/include", "-c", "-x", "c", "/dev/null", "-o", "p.o"], tmp),
        (["-Wp,-MMD,dep.d", "-c", "-x", "c", "/dev/null", "-o", "p.o"], tmp),  # writes a dependency file
        (["-Wp,-MMD,dep.d", "-c", "-x", "c", "/dev/null", "-o", "p.o"], tmp),
        (["-c", "-x", "c", "/dev/null", "-o", "p.o"], own),  # run from inside the build's own tree
        (["-c", "-x", "c", "/dev/null", "-o", "p.o"], own),
    ]
    for args, cwd in runs:
        assert _cc(env, *args, cwd=cwd).returncode == 0
    assert len(calls.read_text().splitlines()) == len(runs)
    # the same probe from another directory is another question (relative paths)
    _cc(env, "-c", "-x", "c", "/dev/null", "-o", "q.o", cwd=tmp)
    _cc(env, "-c", "-x", "c", "/dev/null", "-o", "q.o", cwd=other)
    _cc(env, "-c", "-x", "c", "/dev/null", "-o", "q.o", cwd=other)
    assert len(calls.read_text().splitlines()) == len(runs) + 2


def test_compiler_not_on_path_or_given_as_a_command_is_left_alone(tmp_path: Path) -> None:
    cache = ProbeCache()
    try:
        for cc in ("/usr/bin/gcc", "ccache gcc", "no-such-compiler-here"):
            env = {"CC": cc, "PATH": os.environ["PATH"]}
            assert cache.env(env, tmp_path, None) == env
    finally:
        cache.close()


def test_no_shim_where_it_could_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temporary directory on a noexec mount would make every compile fail: no shim then."""
    real_statvfs = os.statvfs

    class NoExec:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_flag = st.f_flag | os.ST_NOEXEC

    monkeypatch.setattr(os, "statvfs", lambda p: NoExec(real_statvfs(p)))
    cache = ProbeCache()
    try:
        env = {"CC": "sh", "PATH": os.environ["PATH"]}
        assert cache.env(env, tmp_path, None) == env
    finally:
        cache.close()


SIG_MAGIC = b"~Module signature appended~\n"


def _unsigned_without_btf(ko: bytes) -> bytes:
    """A module's ELF image without its signature and with the bytes of its .BTF section
    zeroed. pahole runs with -j and orders the types it encodes as its threads finish (the
    kernel's scripts/Makefile.btf says so), so .BTF and the signature over it differ from one
    build to the next; every other byte does not."""
    if ko.endswith(SIG_MAGIC):
        (sig_len,) = struct.unpack(">I", ko[-len(SIG_MAGIC) - 4:-len(SIG_MAGIC)])
        ko = ko[:-len(SIG_MAGIC) - 12 - sig_len]
    found = list(modinfo.sections(ko))
    assert found, "not an ELF image"
    image = bytearray(ko)
    for name, offset, size in found:
        if name == b".BTF":
            image[offset:offset + size] = bytes(size)
    return bytes(image)


def _ko_digests(sandbox: Sandbox, kver: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(_unsigned_without_btf(modinfo.read_module_bytes(p))).hexdigest()
            for p in sorted((sandbox.install_tree / kver / "updates/dkms").glob("*.ko*"))}


@pytest.mark.kernel
@needs_kernel
def test_real_builds_share_probe_answers_and_make_the_same_modules(sandbox: Sandbox, tmp_path: Path) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    names = ["probe_a", "probe_b", "probe_c"]
    for n in names:
        write_module(sandbox.source_tree, n)  # the trigger finds and adds them
    log = tmp_path / "probes.log"
    # the same builds twice: without the build cache, so that the second one runs make
    (sandbox.etc / "dkms-hooks.toml").write_text("compiler_probe_cache = false\n[cache]\nenabled = false\n")
    res = sandbox.event("apt", "trigger", env={"DKMS_HOOKS_PROBE_LOG": str(log)})
    assert res.returncode == 0, res.output
    assert not log.exists()
    without = _ko_digests(sandbox, k)
    assert len(without) == len(names)

    for n in names:
        sandbox.dkms("remove", f"{n}/1.0", "--all", check=True)
    (sandbox.etc / "dkms-hooks.toml").write_text("[cache]\nenabled = false\n")
    res = sandbox.event("apt", "trigger", env={"DKMS_HOOKS_PROBE_LOG": str(log)})
    assert res.returncode == 0, res.output
    answers = log.read_text().splitlines()
    hits = [a for a in answers if a.startswith("hit")]
    misses = [a for a in answers if a == "miss"]
    # every make asks the same questions: the first two (side by side) ask the compiler, the
    # third hears every one of its questions answered
    assert misses and len(hits) >= len(answers) // 4
    assert all(a == "miss" or a.split()[1].isdigit() for a in answers)
    assert _ko_digests(sandbox, k) == without
    for n in names:
        assert f"  installed  {n}/1.0, {k}\n" in res.stdout
