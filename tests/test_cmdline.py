from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dkms_hooks.cli import cmdline
from dkms_hooks.model.options import Options


def test_forms_of_values() -> None:
    p = cmdline.parse(["build", "-m", "foo/1.0", "-k", "6.1/x86_64", "--kernelver=6.2", "--arch=arm64", "-j", "3"])
    o = p.options
    assert (o.action, o.module, o.version) == ("build", "foo", "1.0")
    assert o.kernels == ("6.1", "6.2")
    assert o.arches == ("x86_64", "arm64")
    assert o.parallel_jobs == "3"


def test_positional_module_version_and_warning() -> None:
    p = cmdline.parse(["remove", "foo/2.0", "extra", "--all"])
    assert (p.options.module, p.options.version, p.options.all) == ("foo", "2.0", True)
    assert p.events == [("warn", "I do not know how to handle extra.")]


def test_paths_are_source_trees_or_archives(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/dkms.conf").write_text("")
    (tmp_path / "a.tar.gz").write_text("")
    assert cmdline.parse(["add", str(tmp_path / "src")]).options.try_source_tree == str(tmp_path / "src")
    conf = str(tmp_path / "src/dkms.conf")
    assert cmdline.parse(["add", conf]).options.try_source_tree == str(tmp_path / "src") + "/./"
    assert cmdline.parse(["ldtarball", str(tmp_path / "a.tar.gz")]).options.archive == str(tmp_path / "a.tar.gz")


def test_unknown_and_deprecated_options() -> None:
    p = cmdline.parse(["status", "--no-initrd", "-jx"])
    assert p.events == [("deprecated", "--no-initrd")]
    assert p.unknown_option == "-jx"


def test_directives_and_trees() -> None:
    p = cmdline.parse(["build", "--directive", "MAKE=make foo", "--dkmstree=/t", "--installtree", "/i"])
    assert p.options.directives == (("MAKE", "make foo"),)
    assert p.trees == {"dkms_tree": "/t", "install_tree": "/i"}


def test_version_stops_parsing() -> None:
    assert cmdline.parse(["-V", "--bogus"]).show_version


@pytest.mark.parametrize("switch", sorted(cmdline._SWITCHES))
def test_each_switch_turns_on_its_flag_and_only_it(switch: str) -> None:
    field = cmdline._SWITCHES[switch]
    o = cmdline.parse(["status", switch]).options
    defaults = Options()
    assert getattr(defaults, field) is False and getattr(o, field) is True
    assert [f.name for f in dataclasses.fields(o) if getattr(o, f.name) != getattr(defaults, f.name)] == [
        "action", field]
