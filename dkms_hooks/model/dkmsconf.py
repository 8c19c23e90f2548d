"""dkms.conf: the values bash reads from it, then upstream's defaults and validation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dkms_hooks.model import bashconf, distro, safety
from dkms_hooks.model.kernel import KConfig, KernelTarget, ver_key

#: every name upstream keeps from a dkms.conf (its directives plus a few internal arrays)
KEPT_NAMES: tuple[str, ...] = tuple(
    ["PACKAGE_NAME", "PACKAGE_VERSION", "POST_ADD", "POST_BUILD", "POST_INSTALL", "POST_REMOVE", "PRE_BUILD", "PRE_INSTALL", "BUILD_DEPENDS", "BUILD_EXCLUSIVE_ARCH", "BUILD_EXCLUSIVE_CONFIG", "BUILD_EXCLUSIVE_KERNEL", "BUILD_EXCLUSIVE_KERNEL_MIN", "BUILD_EXCLUSIVE_KERNEL_MAX", "build_exclude", "MAKE", "MAKE_MATCH", "PATCH", "PATCH_MATCH", "patch_array", "BUILT_MODULE_NAME", "built_module_name", "BUILT_MODULE_LOCATION", "built_module_location", "DEST_MODULE_NAME", "dest_module_name", "DEST_MODULE_LOCATION", "dest_module_location", "STRIP", "strip", "AUTOINSTALL", "NO_WEAK_MODULES", "BUILD_DEPENDS_REBUILD", "OBSOLETE_BY", "CLEAN", "REMAKE_INITRD", "MODULES_CONF", "MODULES_CONF_OBSOLETES", "MODULES_CONF_ALIAS_TYPE", "MODULES_CONF_OBSOLETE_ONLY"]
)
#: the directives among them (what `dkms conf --raw` lists)
DIRECTIVES: tuple[str, ...] = tuple(n for n in KEPT_NAMES if n.isupper())
#: in the order upstream warns about them
DEPRECATED: tuple[str, ...] = (
    "CLEAN",
    "REMAKE_INITRD",
    "MODULES_CONF",
    "MODULES_CONF_OBSOLETES",
    "MODULES_CONF_ALIAS_TYPE",
    "MODULES_CONF_OBSOLETE_ONLY",
    "OBSOLETE_BY",
)
_BOOLEANS = ("AUTOINSTALL", "BUILD_DEPENDS_REBUILD", "NO_WEAK_MODULES")


@dataclass(frozen=True)
class Diagnostic:
    """One line upstream prints while reading; ``stream`` is "out" or "err"."""

    stream: str
    text: str


@dataclass(frozen=True)
class BuiltModule:
    index: int
    built_name: str
    built_location: str
    dest_name: str
    #: after the distribution's override (upstream's dest_module_location)
    dest_location: str
    #: as written in dkms.conf (upstream's DEST_MODULE_LOCATION)
    declared_dest_location: str
    strip: bool

    @property
    def built_path(self) -> str:
        return f"{self.built_location}{self.built_name}"

    def possible_dest_locations(self) -> list[str]:
        locs = [self.dest_location]
        if self.declared_dest_location != self.dest_location:
            locs.append(self.declared_dest_location)
        return locs


@dataclass
class ModuleConf:
    path: Path
    values: bashconf.Values
    kernel: KernelTarget
    package_name: str = ""
    package_version: str = ""
    modules: list[BuiltModule] = field(default_factory=list)
    make_command: str = ""
    patches: list[str] = field(default_factory=list)
    build_exclude: bool = False
    errors: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def scalar(self, name: str) -> str:
        return self.values.get(name, {}).get(0, "")

    def array(self, name: str) -> list[str]:
        arr = self.values.get(name, {})
        return [arr[i] for i in sorted(arr)]

    def element(self, name: str, index: int) -> str:
        return self.values.get(name, {}).get(index, "")

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def num_modules(self) -> int:
        return len(self.modules)

    @property
    def autoinstall(self) -> bool:
        return self.scalar("AUTOINSTALL").lower() == "yes"

    @property
    def build_depends(self) -> list[str]:
        return [d for d in self.array("BUILD_DEPENDS")]

    @property
    def build_depends_rebuild(self) -> bool:
        return self.scalar("BUILD_DEPENDS_REBUILD").lower() == "yes"

    @property
    def no_weak_modules(self) -> bool:
        return self.scalar("NO_WEAK_MODULES").lower() == "yes"

    def script(self, name: str) -> str:
        return self.scalar(name)

    def module_excluded(self, index: int) -> bool:
        return not _module_buildable(self, index)


def read_values(
    files: Sequence[Path],
    *,
    scope: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> bashconf.SourceResult:
    return bashconf.source_files(files, KEPT_NAMES, scope=scope, deprecated=DEPRECATED, env=env)


def deprecation_messages(result: bashconf.SourceResult) -> list[str]:
    out: list[str] = []
    for d in result.deprecations:
        if d.count == 0:
            continue
        if d.name == "CLEAN":
            if d.first not in ("true", "/bin/true", "/usr/bin/true"):
                out.append(f"CLEAN ({d.file})")
        elif d.name == "OBSOLETE_BY":
            out.append(f"OBSOLETE_BY ({d.file}): use BUILD_EXCLUSIVE_KERNEL_MAX instead")
        else:
            out.append(f"{d.name} ({d.file})")
    return out


# --- bash's [[ =~ ]] ---------------------------------------------------------------
_POSIX_CLASSES = {
    "[:alpha:]": "a-zA-Z",
    "[:digit:]": "0-9",
    "[:alnum:]": "a-zA-Z0-9",
    "[:upper:]": "A-Z",
    "[:lower:]": "a-z",
    "[:space:]": r" \t\n\r\f\v",
    "[:xdigit:]": "0-9A-Fa-f",
    "[:punct:]": r"!-/:-@\[-`{-~",
}


def bash_regex_search(pattern: str, text: str) -> bool | None:
    """``[[ text =~ pattern ]]``: POSIX ERE, unanchored. None when the pattern is invalid
    (bash's status 2, which every caller treats as "no")."""
    for cls, rng in _POSIX_CLASSES.items():
        pattern = pattern.replace(cls, rng)
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return None


def _kconfig_enabled(kconfig: KConfig, name: str) -> bool:
    return kconfig.get(name, "")[:1] in ("y", "m")


def _config_list_ok(kernel: KernelTarget, spec: str) -> bool:
    kconfig = kernel.kconfig()
    for item in spec.split():
        if item.startswith("!"):
            if _kconfig_enabled(kconfig, item[1:]):
                return False
        elif not _kconfig_enabled(kconfig, item):
            return False
    return True


def _exclusive_ok(conf: ModuleConf, index: int | None) -> bool:
    kver, arch = conf.kernel.kver, conf.kernel.arch

    def get(name: str) -> str:
        return conf.element(name, 0 if index is None else index)

    kernel_re = get("BUILD_EXCLUSIVE_KERNEL")
    if kernel_re and bash_regex_search(kernel_re, kver) is False:
        return False
    kmin = get("BUILD_EXCLUSIVE_KERNEL_MIN")
    if kmin and ver_key(kver) < ver_key(kmin):
        return False
    kmax = get("BUILD_EXCLUSIVE_KERNEL_MAX")
    if kmax and ver_key(kver) > ver_key(kmax):
        return False
    arch_re = get("BUILD_EXCLUSIVE_ARCH")
    if arch_re and bash_regex_search(arch_re, arch) is False:
        return False
    cfg = get("BUILD_EXCLUSIVE_CONFIG")
    if cfg and conf.kernel.config.exists() and not _config_list_ok(conf.kernel, cfg):
        return False
    return True


#: the directives that keep a module off some kernels
EXCLUSIVE_DIRECTIVES = (
    "BUILD_EXCLUSIVE_KERNEL",
    "BUILD_EXCLUSIVE_KERNEL_MIN",
    "BUILD_EXCLUSIVE_KERNEL_MAX",
    "BUILD_EXCLUSIVE_ARCH",
    "BUILD_EXCLUSIVE_CONFIG",
)


def _module_buildable(conf: ModuleConf, index: int) -> bool:
    # The scalar form applies to every module; element [index] to that module alone.
    return _exclusive_ok(conf, None) and _exclusive_ok(conf, index)


def _has_exclusive(conf: ModuleConf, index: int) -> bool:
    return any(conf.element(n, 0) or conf.element(n, index) for n in EXCLUSIVE_DIRECTIVES)


def resolve(
    result: bashconf.SourceResult,
    *,
    path: Path,
    kernel: KernelTarget,
    running_distribution: str,
    default_build_dir: Path,
    addon_modules_dir: str = "",
    dest_location: Callable[[str], str] | None = None,
    directives: Iterable[tuple[str, str]] = (),
    deprecation_warnings: bool = False,
    vmlinux_is_clang: bool = False,
) -> ModuleConf:
    """Upstream's read_conf after sourcing: apply --directive values, defaults, checks."""
    values: bashconf.Values = {k: dict(v) for k, v in result.values.items()}
    conf = ModuleConf(path=path, values=values, kernel=kernel)
    diag = conf.diagnostics
    if deprecation_warnings:
        for text in deprecation_messages(result):
            diag.append(Diagnostic("err", f"Deprecated feature: {text}"))
    for name, value in directives:
        values.setdefault(name, {})[0] = value
        diag.append(Diagnostic("out", f'DIRECTIVE: {name}="{value}"'))

    def error(text: str) -> None:
        conf.errors.append(text)
        diag.append(Diagnostic("err", f"dkms.conf: Error! {text}"))

    conf.package_name = conf.scalar("PACKAGE_NAME")
    conf.package_version = conf.scalar("PACKAGE_VERSION")
    if not conf.package_name:
        error("No 'PACKAGE_NAME' directive specified.")
    if not conf.package_version:
        error("No 'PACKAGE_VERSION' directive specified.")

    # Arrays may be sparse: the highest index of any of the four decides the count.
    indexes = [i for n in ("BUILT_MODULE_NAME", "BUILT_MODULE_LOCATION", "DEST_MODULE_NAME",
                           "DEST_MODULE_LOCATION") for i in values.get(n, {})]
    num = max(indexes) + 1 if indexes else 0
    lower = {n: dict(values.get(n, {})) for n in
             ("built_module_name", "built_module_location", "dest_module_name", "dest_module_location",
              "strip")}
    for i in range(num):
        built = conf.element("BUILT_MODULE_NAME", i)
        location = conf.element("BUILT_MODULE_LOCATION", i)
        dest = conf.element("DEST_MODULE_NAME", i)
        declared = conf.element("DEST_MODULE_LOCATION", i)
        strip_value = conf.element("STRIP", i)
        if strip_value[:1] in ("n", "N"):
            lower["strip"][i] = "no"
        elif strip_value[:1] in ("y", "Y"):
            lower["strip"][i] = "yes"
        elif strip_value == "":
            lower["strip"][i] = lower["strip"].get(0) or "yes"
        if not built and num == 1:
            built = conf.package_name
        if not dest:
            dest = built
        if location and not location.endswith("/"):
            location += "/"
        lower["built_module_name"][i] = built
        lower["built_module_location"][i] = location
        lower["dest_module_name"][i] = dest
        if not built:
            error(f"No 'BUILT_MODULE_NAME' directive specified for record #{i}.")
        if built.endswith((".o", ".ko")):
            error(f"'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #{i}.")
        if dest.endswith((".o", ".ko")):
            error(f"'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #{i}.")
        if dest_location is not None:
            where = dest_location(declared)
        else:
            where = distro.dest_module_location(running_distribution, declared, addon_modules_dir)
        lower["dest_module_location"][i] = where
        if declared == "":
            error(f"No 'DEST_MODULE_LOCATION' directive specified for record #{i}.")
        elif not declared.startswith(("/kernel", "/updates", "/extra")):
            conf.errors.append("DEST_MODULE_LOCATION")
            diag.append(Diagnostic("err", "dkms.conf: Error! Directive 'DEST_MODULE_LOCATION' does not begin with"))
            diag.append(Diagnostic("err", f"'/kernel', '/updates', or '/extra' in record #{i}."))
        conf.modules.append(
            BuiltModule(i, built, location, dest, where, declared, lower["strip"].get(i, "yes") != "no")
        )
    for n in ("built_module_name", "built_module_location", "dest_module_name", "dest_module_location"):
        if len(lower[n]) != num:
            error("Module name/location array length mismatch.")
    _check_paths(conf, error)

    make = values.get("MAKE", {})
    make_match = values.get("MAKE_MATCH", {})
    command = "" if make_match.get(0) else make.get(0, "")
    for i in range(len(make)):
        if make.get(i) and make_match.get(i) and bash_regex_search(make_match[i], kernel.kver):
            command = make[i]
    if not command:
        command = f"make -C {kernel.source_dir} M={default_build_dir}"
    if vmlinux_is_clang or ((kernel.source_dir / "vmlinux").exists() is False and kernel.is_clang()):
        command += " LLVM=1"
    conf.make_command = command

    patch = values.get("PATCH", {})
    patch_match = values.get("PATCH_MATCH", {})
    for i in range(len(patch)):
        p = patch.get(i, "")
        m = patch_match.get(i, "")
        if p and (not m or bash_regex_search(m, kernel.kver)):
            conf.patches.append(p)

    obsolete_by = conf.scalar("OBSOLETE_BY")
    if obsolete_by and not conf.scalar("BUILD_EXCLUSIVE_KERNEL_MAX"):
        if not any(values.get("BUILD_EXCLUSIVE_KERNEL_MAX", {}).get(i) for i in range(num)):
            values.setdefault("BUILD_EXCLUSIVE_KERNEL_MAX", {})[0] = obsolete_by

    buildable = sum(1 for i in range(num) if _module_buildable(conf, i))
    conf.build_exclude = buildable == 0 and any(_has_exclusive(conf, i) for i in range(num))

    for name in _BOOLEANS:
        v = conf.scalar(name)
        if v == "" or v.lower() == "yes":
            continue
        if v.lower() == "no":
            values[name][0] = ""
            continue
        error(f"Unsupported {name} value '{v}'")
    return conf


def _check_paths(conf: ModuleConf, error: Callable[[str], None]) -> None:
    """Ours, beyond upstream: names and locations that would put a path outside its tree
    (the dkms tree, the build directory, the kernel's module directory) make the file invalid."""
    for name in ("PACKAGE_NAME", "PACKAGE_VERSION"):
        value = conf.scalar(name)
        why = safety.bad_name(value) if value else None
        if why:
            error(f"'{name}' directive {why}.")
    for m in conf.modules:
        for directive, value, check in (
            ("BUILT_MODULE_NAME", m.built_name, safety.bad_name),
            ("DEST_MODULE_NAME", m.dest_name, safety.bad_name),
            ("BUILT_MODULE_LOCATION", m.built_location, safety.bad_location),
            ("DEST_MODULE_LOCATION", m.declared_dest_location, safety.bad_location),
        ):
            why = check(value) if value else None
            if why:
                error(f"'{directive}' directive {why} in record #{m.index}.")


def strict_checks(conf: ModuleConf) -> tuple[list[Diagnostic], bool]:
    """What upstream adds before add/build/install (not before uninstall or remove).
    Returns the lines to print and whether the file passed."""
    diag: list[Diagnostic] = []
    ok = True
    if conf.num_modules == 0:
        diag.append(Diagnostic("err", "dkms.conf: Warning! Zero modules specified."))
    for attr, directive in (("built_path", "BUILT_MODULE_NAME"), ("dest_name", "DEST_MODULE_NAME")):
        seen: list[str] = []
        for m in conf.modules:
            name = getattr(m, attr)
            if name in seen:
                ok = False
                diag.append(Diagnostic(
                    "err", f"dkms.conf: Error! Duplicate module '{name}' in '{directive}[{m.index}]'."))
            seen.append(name)
    return diag, ok


def raw_lines(values: bashconf.Values) -> list[str]:
    """``NAME[i]=value`` for every directive as read, sorted bytewise, escaped as in the corpus."""
    lines = []
    for name in DIRECTIVES:
        for i, v in values.get(name, {}).items():
            esc = v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
            lines.append(f"{name}[{i}]={esc}")
    return sorted(lines, key=lambda s: s.encode("utf-8", "surrogateescape"))
