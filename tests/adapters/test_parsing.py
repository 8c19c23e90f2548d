"""What each adapter makes of its host's call: kernels and sources added and removed in one
event, directories never parsed into name and version, bad input refused with a reason."""

from __future__ import annotations

import io
from pathlib import Path

from dkms_hooks.model.events import Event, Source, merge
from dkms_hooks.model.paths import Layout
from dkms_hooks.plugins.adapters import apt, gentoo, kernel_install, pacman, rpm


def _s(sources: tuple[Source, ...]) -> tuple[str, ...]:
    """Sources in the queue's text form: a directory, or name/version."""
    return tuple(map(str, sources))


def parse(module: object, source: str, *argv: str, stdin: str = "", env: dict[str, str] | None = None,
          layout: Layout | None = None) -> Event:
    ev = module.dkms_parse_event(source=source, argv=list(argv), env=env or {},  # type: ignore[attr-defined]
                                 stdin=io.StringIO(stdin), layout=layout or Layout())
    assert isinstance(ev, Event)
    return ev


def test_each_adapter_answers_only_its_own_host() -> None:
    for module in (apt, gentoo, kernel_install, pacman, rpm):
        assert module.dkms_parse_event(source="frob", argv=[], env={}, stdin=io.StringIO(""),  # type: ignore
                                       layout=Layout()) is None


def test_pacman_one_removal_of_a_kernel_and_a_module_with_dashes() -> None:
    ev = parse(pacman, "pacman", "remove", stdin="usr/lib/modules/6.9.1-arch1-1/build/include/\n"
               "usr/lib/modules/6.9.1-arch1-1/modules.alias\nusr/src/can-dkms-4.1.6-200/dkms.conf\n")
    assert ev.kernels_removed == ("6.9.1-arch1-1",)
    # the directory, not a guess at name and version: the engine asks the registrations
    assert _s(ev.sources_removed) == ("/usr/src/can-dkms-4.1.6-200",)
    assert not ev.refused


def test_pacman_install_builds_what_the_package_brings() -> None:
    ev = parse(pacman, "pacman", "install", stdin="usr/src/r8168-8.053.00-NAPI/dkms.conf\n"
               "usr/lib/modules/6.9.2-arch1-1/build/include/\n")
    assert (_s(ev.sources_added), ev.kernels_added) == (("/usr/src/r8168-8.053.00-NAPI",), ("6.9.2-arch1-1",))
    assert ev.build_added_always


def test_pacman_refuses_targets_outside_its_trees(tmp_path: Path) -> None:
    lay = Layout().with_trees(source_tree=tmp_path / "src")
    ev = parse(pacman, "pacman", "remove", layout=lay,
               stdin="usr/src/../dkms.conf\netc/passwd\nusr/lib/modules/../build/include/\nusr/src/ok-1/dkms.conf\n")
    assert _s(ev.sources_removed) == (str(tmp_path / "src/ok-1"),)
    assert len(ev.refused) == 3 and all("neither a module source" in r for r in ev.refused)
    assert parse(pacman, "pacman", "frob").refused == ("unknown pacman hook verb 'frob' (install or remove)",)


def test_rpm_file_triggers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "zfs-2.2.4-1").mkdir(parents=True)
    (src / "zfs-2.2.4-1/dkms.conf").write_text("")
    (src / "kernels/6.11.0-1.fc41.x86_64").mkdir(parents=True)
    lay = Layout().with_trees(source_tree=src)
    paths = f"{src}/zfs-2.2.4-1\n{src}/zfs-2.2.4-1/dkms.conf\n{src}/kernels/6.11.0-1.fc41.x86_64/Makefile\n"
    ev = parse(rpm, "rpm", "filetrigger-in", stdin=paths, layout=lay)
    # kernel-devel's /usr/src/kernels holds no dkms.conf: not a module source
    assert _s(ev.sources_added) == (f"{src}/zfs-2.2.4-1",) and ev.build_added_always
    ev = parse(rpm, "rpm", "filetrigger-un", stdin=paths + "/etc/shadow\n", layout=lay)
    assert _s(ev.sources_removed) == (f"{src}/zfs-2.2.4-1", f"{src}/kernels")
    assert ev.refused == (f"rpm file trigger path '/etc/shadow' is not under {src}/",)
    assert parse(rpm, "rpm", "preun", "zfs", "2.2.4", "1") == Event(source="rpm")  # an upgrade
    assert _s(parse(rpm, "rpm", "preun", "zfs", "2.2.4", "0").sources_removed) == ("zfs/2.2.4",)
    assert parse(rpm, "rpm", "post", "zfs").refused == ("rpm post needs a module NAME and VERSION",)


def test_apt_verbs() -> None:
    in_apt = {"DPKG_FRONTEND_LOCKED": "1"}
    ev = parse(apt, "apt", "trigger", env=in_apt)
    assert ev.rescan and ev.defer and not _s(ev.sources_added)
    assert parse(apt, "apt", "kernel-postinst", "6.1.0-1-amd64").initramfs_follows
    assert parse(apt, "apt", "headers-postinst", "6.1.0-1-amd64", env=in_apt).defer
    assert not parse(apt, "apt", "kernel-prerm", "6.1.0-1-amd64", env=in_apt).defer
    ev = parse(apt, "apt", "source-configure", "r8168", "8.053.00-NAPI")
    assert _s(ev.sources_added) == ("r8168/8.053.00-NAPI",) and not ev.build_added_always  # AUTOINSTALL decides
    assert parse(apt, "apt", "source-remove", "../x", "1").refused
    assert parse(apt, "apt", "kernel-prerm", "").refused


def test_gentoo_and_kernel_install() -> None:
    ev = parse(gentoo, "gentoo", "postinst", "foo", "1.0-r1", "6.6.30-gentoo-dist")
    assert (_s(ev.sources_added), ev.source_kernels, ev.build_added_always) == (("foo/1.0-r1",), ("6.6.30-gentoo-dist",),
                                                                          True)
    assert _s(parse(gentoo, "gentoo", "prerm", "foo", "1.0-r1").sources_removed) == ("foo/1.0-r1",)
    assert parse(kernel_install, "kernel-install", "add", "6.12.1").kernels_added == ("6.12.1",)
    assert parse(kernel_install, "kernel-install", "inspect").empty  # not ours: kernel-install goes on


def test_a_later_removal_cancels_an_earlier_addition_in_the_queue() -> None:
    ev = merge([Event(sources_added=(Source.named("a", "1"), Source.named("b", "1")), kernels_added=("k1",), source="apt", initramfs_follows=True),
                Event(sources_removed=(Source.named("a", "1"),), source="apt"), Event(rescan=True, source="apt")])
    assert (_s(ev.sources_added), _s(ev.sources_removed), ev.kernels_added) == (("b/1",), ("a/1",), ("k1",))
    assert ev.rescan and not ev.initramfs_follows and ev.source == "apt"


def test_queued_events_of_the_previous_version_still_run() -> None:
    old = {"kind": "source-added", "kernels": [], "modules": ["foo/1.0"], "source": "apt",
           "initramfs_follows": False, "defer": True}
    assert Event.from_json(old) == Event(sources_added=(Source.named("foo", "1.0"),), source="apt")
    new = Event(kernels_removed=("k",), rescan=True, defer=True)
    assert Event.from_json(new.to_json()) == Event(kernels_removed=("k",), rescan=True)
