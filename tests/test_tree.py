from __future__ import annotations

from pathlib import Path

from dkms_hooks.model import tree
from dkms_hooks.model.kernel import Compression, KernelTarget, kmod_can_read, ver_key, version_sort_key
from dkms_hooks.model.paths import Layout


def make_tree(root: Path) -> Layout:
    lay = Layout(dkms_tree=root / "dkms", source_tree=root / "src", install_tree=root / "mods")
    for m, v in (("a", "1.0"), ("a", "2.0"), ("b", "0.1")):
        (lay.source_tree / f"{m}-{v}").mkdir(parents=True)
        lay.version_dir(m, v).mkdir(parents=True)
        lay.source_link(m, v).symlink_to(lay.source_tree / f"{m}-{v}")
    (lay.built_dir("a", "2.0", "6.1.0-1", "x86_64") / "module").mkdir(parents=True)
    (lay.built_dir("a", "2.0", "6.2.0-1", "x86_64") / "module").mkdir(parents=True)
    lay.active_link("a", "6.2.0-1", "x86_64").symlink_to("2.0/6.2.0-1/x86_64")
    (lay.built_dir("a", "2.0", "notakernel", "x86_64") / "module").mkdir(parents=True)
    return lay


def test_status_entries(tmp_path: Path) -> None:
    lay = make_tree(tmp_path)
    got = [(e.state.value, e.module, e.version, e.kver) for e in tree.status_entries(lay)]
    assert got == [
        ("added", "a", "1.0", ""),
        ("built", "a", "2.0", "6.1.0-1"),
        ("installed", "a", "2.0", "6.2.0-1"),
        ("added", "b", "0.1", ""),
    ]
    assert [e.kver for e in tree.status_entries(lay, "a", "2.0", "6.2.0-1")] == ["6.2.0-1"]


def test_broken_states(tmp_path: Path) -> None:
    lay = make_tree(tmp_path)
    (lay.source_tree / "b-0.1").rmdir()
    assert tree.is_broken(lay, "b", "0.1")
    lay.source_link("a", "1.0").unlink()
    assert tree.is_broken(lay, "a", "1.0")  # link gone, source still there
    assert [e.state.value for e in tree.status_entries(lay, "b")] == ["broken"]


def test_ver_key_orders_like_upstream() -> None:
    assert ver_key("2.6.9-1cvs200409091247") == "002.006.009-001cvs200409091247"
    assert ver_key("6.10.0") > ver_key("6.9.12")
    assert sorted(["6.10", "6.9", "6.1"], key=version_sort_key) == ["6.1", "6.9", "6.10"]


def test_compression_from_tree_then_kconfig(tmp_path: Path) -> None:
    lay = Layout(install_tree=tmp_path / "mods")
    src = tmp_path / "headers"
    src.mkdir()
    (src / ".config").write_text("CONFIG_MODULE_COMPRESS_ZSTD=y\n")
    k = KernelTarget("6.1", "x86_64", src, src / ".config")
    # a kmod without zstd (Debian 11's) could not load such a module: it stays uncompressed
    assert k.compression(lay) is (Compression.zstd if kmod_can_read(Compression.zstd) else Compression.none)
    (lay.install_tree / "6.1/kernel").mkdir(parents=True)
    (lay.install_tree / "6.1/kernel/x.ko.xz").write_text("")
    assert k.compression(lay) is Compression.xz
