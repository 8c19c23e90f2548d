"""Upstream's command line, parsed the way its option loop parses it (``-k=6.1``,
``--kernelver 6.1/x86_64``, a bare ``module/version``, a directory or dkms.conf path...),
which argparse cannot reproduce."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dkms_hooks.model.options import Options

TYPE_CHECKING = False  # see dkms_hooks/__init__.py
if TYPE_CHECKING:
    from typing import Any

ACTIONS = re.compile(
    r"^(remove|(auto|un)?install|match|mktarball|(un)?build|add|status|ldtarball|generate_mok"
    r"|kernel_(preinst|postinst|prerm)|conf|plan|cache|mok)$"
)
_MV = re.compile(r"^([^/]*)/(.*)$")
_WITH_VALUE = re.compile(r"^[^=]*=(.*)$", re.DOTALL)
#: options that take no value and turn one of :class:`Options`' flags on; only whole words
#: match, so none of them is shadowed by the prefix-matched options (``--arch`` and the like)
_SWITCHES = {
    "--binaries-only": "binaries_only",
    "--source-only": "source_only",
    "--force": "force",
    "--force-version-override": "force_version_override",
    "--all": "all",
    "--verbose": "verbose",
    "--rpm_safe_upgrade": "rpm_safe_upgrade",
    "--symlink-modules": "symlink_modules",
    "--no-depmod": "no_depmod",
    "--modprobe-on-install": "modprobe_on_install",
    "--json": "json",
    "--raw": "raw",
    "--build": "plan_build",
}

USAGE = """Usage: {prog} [action] [options]
  [action]  = {{ add | remove | build | unbuild | install | uninstall | match |
               autoinstall | mktarball | ldtarball | status | generate_mok |
               kernel_preinst | kernel_postinst | kernel_prerm }}
  [options] = [-m module] [-v module-version] [-k kernel-version] [-a arch]
              [-c dkms.conf-location] [-q] [--force] [--force-version-override] [--all]
              [--templatekernel=kernel] [--directive='cli-directive=cli-value']
              [--config=kernel-include/config/auto.conf-location] [--archive=tarball-location]
              [--kernelsourcedir=source-location] [--rpm_safe_upgrade]
              [--dkmstree path] [--sourcetree path] [--installtree path]
              [--binaries-only] [--source-only] [--verbose]
              [--no-depmod] [--modprobe-on-install] [-j number] [--version] [--help]"""


@dataclass
class Parsed:
    options: Options
    trees: dict[str, str] = field(default_factory=dict)
    #: things to print, in order, as the loop meets them: ("deprecated"|"warn"|"quiet", text)
    events: list[tuple[str, str]] = field(default_factory=list)
    show_version: bool = False
    show_help: bool = False
    debug: bool = False
    more_than_one_action: bool = False
    unknown_option: str = ""


def _shell_read(value: str) -> str:
    # `read -r var <<< value`: the first line, blanks at both ends removed
    return value.split("\n", 1)[0].strip(" \t")


class _Draft:
    """Options being read: the same fields, lists still growing."""

    def __init__(self) -> None:
        for f in dataclasses.fields(Options):
            setattr(self, f.name, list(f.default) if isinstance(f.default, tuple) else f.default)

    def done(self) -> Options:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(Options):
            v = getattr(self, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
        return Options(**values)


def parse(argv: Sequence[str]) -> Parsed:
    p = Parsed(Options())
    o: Any = _Draft()  # the fields of Options, set one by one
    try:
        _read(argv, o, p)
    finally:
        p.options = o.done()
    return p


def _read(argv: Sequence[str], o: Any, p: Parsed) -> None:
    args = list(argv)
    i = 0

    def value(arg: str) -> str:
        nonlocal i
        m = _WITH_VALUE.match(arg)
        if m:
            return _shell_read(m.group(1))
        i += 1
        return _shell_read(args[i]) if i < len(args) else ""

    while i < len(args):
        a = args[i]
        if a.startswith("--module") or a == "-m":
            mv = value(a)
            m = _MV.match(mv)
            o.module, o.version = (m.group(1), m.group(2)) if m else (mv, o.version)
        elif a == "-v":
            o.version = value(a)
        elif a.startswith("--kernelver") or a == "-k":
            ka = value(a)
            m = _MV.match(ka)
            if m:
                o.kernels.append(m.group(1))
                o.arches.append(m.group(2))
            else:
                o.kernels.append(ka)
        elif a.startswith("--templatekernel"):
            o.template_kernel = value(a)
        elif a == "-c":
            o.conf = value(a)
        elif a in ("--quiet", "-q"):
            p.events.append(("quiet", ""))
        elif a in ("--version", "-V"):
            p.show_version = True
            return
        elif a in ("--no-initrd", "--no-clean-kernel", "--no-prepare-kernel"):
            p.events.append(("deprecated", a))
        elif a in _SWITCHES:
            setattr(o, _SWITCHES[a], True)
        elif a.startswith("--dkmstree"):
            p.trees["dkms_tree"] = value(a)
        elif a.startswith("--sourcetree"):
            p.trees["source_tree"] = value(a)
        elif a.startswith("--installtree"):
            p.trees["install_tree"] = value(a)
        elif a.startswith("--config"):
            o.kernel_config = value(a)
        elif a.startswith("--archive"):
            o.archive = value(a)
        elif a.startswith("--arch") or a == "-a":
            o.arches.append(value(a))
        elif a.startswith("--kernelsourcedir"):
            o.kernel_source_dir = value(a)
        elif a.startswith("--directive"):
            d = value(a)
            name, _, val = d.partition("=")
            o.directives.append((name, val))
        elif a == "--debug":
            p.debug = True
        elif a == "-j":
            o.parallel_jobs = value(a)
        elif a in ("--help", "-h"):
            p.show_help = True
            return
        elif a.startswith("-"):
            p.unknown_option = a
            return
        elif o.action in ("cache", "mok") and not o.positional:
            # ours: `dkms cache status|prune|clear`, `dkms mok status|enroll` (status is also a verb)
            o.positional.append(a)
        elif ACTIONS.match(a):
            if o.action:
                p.more_than_one_action = True
                return
            o.action = a
        elif Path(a).is_file() and a.endswith("dkms.conf"):
            o.try_source_tree = a[: -len("dkms.conf")] + "./"
            o.positional.append(a)
        elif Path(a).is_dir() and (Path(a) / "dkms.conf").is_file():
            o.try_source_tree = a
            o.positional.append(a)
        elif Path(a).is_file():
            o.archive = a
            o.positional.append(a)
        elif not o.module:
            m = _MV.match(a)
            o.module, o.version = (m.group(1), m.group(2)) if m else (a, o.version)
            o.positional.append(a)
        else:
            p.events.append(("warn", f"I do not know how to handle {a}."))
            o.positional.append(a)
        i += 1
