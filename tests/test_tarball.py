"""mktarball and ldtarball with real built modules; hostile archives refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel


def members(path: Path) -> set[str]:
    with tarfile.open(path) as tf:
        return {m.name.removeprefix("./") for m in tf.getmembers()}


@pytest.mark.kernel
@needs_kernel
def test_mktarball_and_ldtarball_round_trip(sandbox: Sandbox, tmp_path: Path) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("build", "dkms_hooks_example/1.0", "-k", k, check=True)
    res = sandbox.dkms("mktarball", "dkms_hooks_example/1.0", "-k", k, check=True)
    name = f"dkms_hooks_example-1.0-kernel{k}-x86_64.dkms.tar.gz"
    tarball = sandbox.dkms_tree / "dkms_hooks_example/1.0/tarball" / name
    assert res.stdout == (f"Marking modules for {k} (x86_64) for archiving...\n\n"
                          f"Marking {sandbox.dkms_tree}/dkms_hooks_example/1.0/source for archiving...\n\n"
                          f"Tarball location: {sandbox.dkms_tree}/dkms_hooks_example/1.0/tarball//{name}\n")
    got = members(tarball)
    assert "dkms_source_tree/dkms.conf" in got
    assert any(m.startswith(f"dkms_main_tree/{k}/x86_64/module/dkms_hooks_example.ko") for m in got)

    source_only = tmp_path / "src-only.dkms.tar.gz"
    sandbox.dkms("mktarball", "dkms_hooks_example/1.0", "--source-only", f"--archive={source_only}", check=True)
    assert not any(m.startswith("dkms_main_tree/") and m.count("/") > 1 for m in members(source_only))
    binaries = tmp_path / "bin-only.dkms.tar.xz"
    sandbox.dkms("mktarball", "dkms_hooks_example/1.0", "-k", k, "--binaries-only", f"--archive={binaries}",
                 check=True)
    got = members(binaries)
    assert {"dkms_binaries_only/PACKAGE_NAME", "dkms_binaries_only/dkms.conf"} <= got
    assert not any(m.startswith("dkms_source_tree") for m in got)
    assert binaries.read_bytes()[:6] == b"\xfd7zXZ\x00"

    # load the full tarball into a fresh set of trees (remove deletes the tree's tarball/ too)
    import shutil

    copy = tmp_path / name
    shutil.copy(tarball, copy)
    sandbox.dkms("remove", "dkms_hooks_example/1.0", "--all", check=True)
    shutil.rmtree(sandbox.source_tree / "dkms_hooks_example-1.0")
    res = sandbox.dkms("ldtarball", str(copy), check=True)
    assert "Loading tarball for dkms_hooks_example/1.0\n" in res.stdout
    assert f"Loading {sandbox.dkms_tree}/dkms_hooks_example/1.0/{k}/x86_64...\n" in res.stdout
    assert (sandbox.source_tree / "dkms_hooks_example-1.0/dkms.conf").is_file()
    assert sandbox.dkms("status").stdout == f"dkms_hooks_example/1.0, {k}, x86_64: built\n"
    res = sandbox.dkms("ldtarball", str(copy))
    assert (res.returncode, res.stderr) == (8, "\nError! dkms_hooks_example/1.0 is already added!\nAborting.\n")
    # --force reloads the binaries over the existing ones (and then, as upstream, refuses the second add)
    built = next((sandbox.dkms_tree / f"dkms_hooks_example/1.0/{k}/x86_64/module").glob("*.ko*"))
    built.write_bytes(b"damaged")
    res = sandbox.dkms("ldtarball", str(copy), "--force")
    assert f"Loading {sandbox.dkms_tree}/dkms_hooks_example/1.0/{k}/x86_64...\n" in res.stdout
    assert built.read_bytes() != b"damaged"


def test_mktarball_needs_built_modules(sandbox: Sandbox) -> None:
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", "dkms_hooks_example/1.0", check=True)
    res = sandbox.dkms("mktarball", "dkms_hooks_example/1.0", "-k", "6.1.0-1-amd64")
    assert res.returncode == 6
    assert res.stderr == ("\nError! No modules built for 6.1.0-1-amd64 (x86_64).\n"
                          "Modules must already be in the built state before using mktarball.\n")


def _tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("evil", ["../escape.txt", "/tmp/dkms-hooks-abs-escape.txt", "link"])
def test_ldtarball_refuses_members_that_escape(sandbox: Sandbox, tmp_path: Path, evil: str) -> None:
    conf = (EXAMPLE / "dkms.conf").read_bytes()
    entries = [_file("pkg/dkms.conf", conf)]
    if evil == "link":
        link = tarfile.TarInfo("pkg/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        entries.append((link, None))
        entries.append(_file("pkg/link", b"overwrite through the link"))
    else:
        entries.append(_file(evil, b"escaped"))
    archive = _tar(tmp_path / "evil.tar.gz", entries)
    before = sandbox.snapshot()
    res = sandbox.dkms("ldtarball", str(archive))
    assert res.returncode != 0
    assert "cannot be unpacked safely" in res.stderr
    assert sandbox.snapshot() == before
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/dkms-hooks-abs-escape.txt").exists()


def test_ldtarball_plain_source_archive(sandbox: Sandbox, tmp_path: Path) -> None:
    archive = tmp_path / "plain.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(EXAMPLE, arcname="dkms_hooks_example-1.0")
    res = sandbox.dkms("ldtarball", str(archive), check=True)
    assert res.stdout.startswith("Creating symlink ")
    assert sandbox.dkms("status").stdout == "dkms_hooks_example/1.0: added\n"
    res = sandbox.dkms("ldtarball", "--archive", str(tmp_path / "none.tar.gz"))
    assert (res.returncode, res.stderr) == (2, f"\nError! {tmp_path}/none.tar.gz does not exist.\n")


@pytest.mark.kernel
@needs_kernel
def test_ldtarball_binaries_only(sandbox: Sandbox, tmp_path: Path) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("build", "dkms_hooks_example/1.0", "-k", k, check=True)
    archive = tmp_path / "bin.dkms.tar.gz"
    sandbox.dkms("mktarball", "dkms_hooks_example/1.0", "-k", k, "--binaries-only", f"--archive={archive}",
                 check=True)
    import shutil

    sandbox.dkms("remove", "dkms_hooks_example/1.0", "--all", check=True)
    shutil.rmtree(sandbox.source_tree / "dkms_hooks_example-1.0")
    res = sandbox.dkms("ldtarball", str(archive))
    # as upstream: the binaries are loaded, but without source nothing is "added", so the verb reports 1
    assert res.returncode == 1
    source = sandbox.dkms_tree / "dkms_hooks_example/1.0/source"
    assert f"Creating {source}\nCopying dkms.conf to {source} ...\n" in res.stdout
    assert (source / "dkms.conf").is_file() and not source.is_symlink()
    sandbox.dkms("install", "dkms_hooks_example/1.0", "-k", k, check=True)
    assert list((sandbox.install_tree / k / "updates/dkms").glob("dkms_hooks_example.ko*"))
