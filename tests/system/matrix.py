"""The transaction matrix: one module source package (``mx``, versions with a dash) taken
through install, upgrade, reinstall, downgrade, remove, purge, and one transaction that
removes a kernel and the module together, by each real client driving the shipped hook
files. After every step the script prints the state: ``dkms status``, the dkms tree, the
installed files and the module's lines in each ``modules.dep``; ``expected_state`` says
what it must be, exactly."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.test_apt import build_deb
from conftest import REPO
from modsrc import write_module

NAME = "mx"
OLD, NEW = "1.0-1", "2.0-1"
#: each step, and the version installed after it (None: the module is gone)
STEPS: tuple[tuple[str, str | None], ...] = (
    ("install", OLD), ("upgrade", NEW), ("reinstall", NEW), ("downgrade", OLD), ("remove", None),
    ("purge", None), ("kernel-and-module", None))

#: printed after each step; the dkms tree without our own state and the MOK pair
STATE = r"""
state() {
    echo "== state $1"
    dkms status
    echo "-- tree"
    (cd /var/lib/dkms && find . -mindepth 1 \( -name .dkms-hooks -o -name 'mok.*' \) -prune -o -printf '%y %p\n' \
        | LC_ALL=C sort)
    echo "-- files"
    find /usr/lib/modules/ -path '*/updates/dkms/*' -printf '%P\n' | LC_ALL=C sort
    echo "-- modules.dep"
    for dep in /usr/lib/modules/*/modules.dep; do
        [ -f "$dep" ] || continue
        k=${dep#/usr/lib/modules/}; k=${k%/modules.dep}
        grep "^updates/dkms/" "$dep" | sed "s|^|$k: |" || true
    done
    echo "== end"
}
"""


@dataclass(frozen=True)
class Kernels:
    """The kernels with headers where the matrix runs, each one's module suffix, and the
    ones installed (with a modules.dep, so depmod indexes them)."""
    names: list[str]
    suffix: dict[str, str]
    with_dep: list[str]

    @classmethod
    def of(cls, root: Path) -> Kernels:
        mods = root / "usr/lib/modules"
        names = sorted(k.name for k in mods.iterdir() if (mods / k.name / "build/include").is_dir())
        suffix = {}
        for k in names:
            config = root / f"usr/src/linux-headers-{k}/.config"
            text = config.read_text(errors="replace") if config.is_file() else ""
            suffix[k] = next((s for opt, s in (("XZ", ".xz"), ("ZSTD", ".zst"), ("GZIP", ".gz"))
                              if f"CONFIG_MODULE_COMPRESS_{opt}=y" in text), "")
        return cls(names, suffix, [k for k in names if (mods / k / "modules.dep").is_file()])


def expected_state(version: str | None, kernels: Kernels) -> str:
    lines = []
    if version is not None:
        lines += [f"{NAME}/{version}, {k}, x86_64: installed" for k in kernels.names]
    lines.append("-- tree")
    if version is not None:
        entries = [f"d ./{NAME}", f"d ./{NAME}/{version}", f"l ./{NAME}/{version}/source"]
        for k in kernels.names:
            base = f"./{NAME}/{version}/{k}/x86_64"
            entries += [f"d ./{NAME}/{version}/{k}", f"d {base}", f"d {base}/log", f"f {base}/log/make.log",
                        f"d {base}/module", f"f {base}/module/{NAME}.ko{kernels.suffix[k]}",
                        f"f {base}/module/Module.symvers", f"l ./{NAME}/kernel-{k}-x86_64"]
        lines += sorted(entries, key=str.encode)
    lines.append("-- files")
    if version is not None:
        lines += [f"{k}/updates/dkms/{NAME}.ko{kernels.suffix[k]}" for k in kernels.names]
    lines.append("-- modules.dep")
    if version is not None:
        lines += [f"{k}: updates/dkms/{NAME}.ko{kernels.suffix[k]}:" for k in kernels.with_dep]
    return "\n".join(lines) + "\n"


def states(out: str) -> dict[str, str]:
    """Each step's printed state, by step name."""
    found = {}
    for block in out.split("== state ")[1:]:
        name, _, rest = block.partition("\n")
        found[name] = rest.split("== end\n", 1)[0]
    return found


@dataclass(frozen=True)
class Client:
    """Shell for each step with one real client. ``install`` and the others are templates
    with ``{pkg}``, the package file of the version the step wants."""
    name: str
    setup: str
    install: str
    upgrade: str
    reinstall: str
    downgrade: str
    remove: str
    purge: str
    #: installs the fake kernel package, then removes it and the module in one transaction
    kernel_and_module: str
    packages: dict[str, Path]

    def script(self) -> str:
        old, new = (str(self.packages[v]) for v in (OLD, NEW))
        return "\n".join([
            STATE, self.setup,
            self.install.format(pkg=old), "state install",
            self.upgrade.format(pkg=new), "state upgrade",
            self.reinstall.format(pkg=new), "state reinstall",
            self.downgrade.format(pkg=old), "state downgrade",
            self.remove, "state remove",
            self.install.format(pkg=old), self.purge, "state purge",
            self.install.format(pkg=old), self.kernel_and_module, "state kernel-and-module",
        ]) + "\n"


def sources(out: Path) -> dict[str, Path]:
    """Both versions build the same module, version string included (MODULE_VERSION is
    often left alone by a packaging-only release): nothing may hang on the two differing."""
    return {v: write_module(out / f"src-{v}", NAME, v, module_version="1.0") for v in (OLD, NEW)}


# --- pacman ------------------------------------------------------------------------------
def pacman_package(out: Path, name: str, version: str, files: dict[str, Path | str]) -> Path:
    root = out / f"pkg-{name}-{version}"
    root.mkdir(parents=True)
    (root / ".PKGINFO").write_text(f"pkgname = {name}\npkgver = {version}\narch = any\nsize = 1\n")
    for rel, src in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copytree(src, dest)
        else:
            dest.write_text(src)
    pkg = out / f"{name}-{version}-any.pkg.tar.zst"
    entries = [".PKGINFO"] + sorted({rel.split("/")[0] for rel in files})
    tar = subprocess.run(["bsdtar", "--uid", "0", "--gid", "0", "-cf", "-", *entries], cwd=root, check=True,
                         capture_output=True).stdout
    pkg.write_bytes(subprocess.run(["zstd", "-q"], input=tar, check=True, capture_output=True).stdout)
    return pkg


def pacman(out: Path, kver: str) -> Client:
    src = sources(out)
    # pkgver may not hold a dash: 1.0-1 is pkgver 1.0, pkgrel 1, as Arch would package it
    pkgs = {v: pacman_package(out, "mx-dkms", v, {f"usr/src/{NAME}-{v}": d}) for v, d in src.items()}
    kpkg = pacman_package(out, "linux-fake", "1-1", {f"usr/lib/modules/{kver}/modules.alias": "# fake\n"})
    hooks = pacman_package(out, "dkms-hooks", "0.1-1", {})
    conf = out / "pacman.conf"
    conf.write_text("[options]\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Never\n")
    pac = (f"pacman --noconfirm --config {conf} --root / --dbpath {out}/db --cachedir {out}/cache "
           f"--logfile {out}/pacman.log --hookdir {REPO}/pacman.d/hooks")
    return Client(
        "pacman", setup=f"mkdir -p {out}/db {out}/cache\n{pac} -U {hooks} >/dev/null",
        install=f"{pac} -U {{pkg}}", upgrade=f"{pac} -U {{pkg}}", reinstall=f"{pac} -U {{pkg}}",
        downgrade=f"{pac} -U {{pkg}}", remove=f"{pac} -R mx-dkms", purge=f"{pac} -Rn mx-dkms",
        kernel_and_module=f"{pac} -U --overwrite '*' {kpkg} >/dev/null\n{pac} -R linux-fake mx-dkms",
        packages=pkgs)


# --- dpkg and APT --------------------------------------------------------------------------
def _module_debs(out: Path, *, with_scripts: bool) -> dict[str, Path]:
    pkgs = {}
    for v, d in sources(out).items():
        scripts = {}
        if with_scripts:  # what dh_dkms would generate
            for kind in ("postinst", "prerm"):
                text = (REPO / f"hooks/dpkg/module-source.{kind}").read_text()
                scripts[kind] = text.replace("#MODULE_NAME#", NAME).replace("#MODULE_VERSION#", v)
        pkgs[v] = build_deb(out, "mx-dkms", {f"/usr/src/{NAME}-{v}": d}, scripts, version=v)
    return pkgs


def _kernel_deb(out: Path, kver: str) -> Path:
    """An image-like package whose prerm runs /etc/kernel/prerm.d, as Debian's kernels do."""
    prerm = f'#!/bin/sh\nset -e\nrun-parts --report --exit-on-error --arg={kver} /etc/kernel/prerm.d\n'
    return build_deb(out, "linux-image-fake", {}, {"prerm": prerm})


KERNEL_HOOKS = f"""for d in postinst.d preinst.d prerm.d header_postinst.d; do
    mkdir -p /etc/kernel/$d; cp {REPO}/hooks/kernel/$d/dkms-hooks /etc/kernel/$d/
done"""


def dpkg(out: Path, kver: str, *, with_scripts: bool) -> Client:
    """dpkg alone: module packages with dh_dkms-like scripts, or with no scripts at all,
    found by our package's file trigger on /usr/src."""
    pkgs = _module_debs(out, with_scripts=with_scripts)
    trigger = build_deb(out, "dkms-hooks", {}, {"postinst": (REPO / "hooks/dpkg/postinst").read_text()},
                        {"triggers": (REPO / "hooks/dpkg/triggers").read_text()})
    kpkg = _kernel_deb(out, kver)
    return Client(
        "dpkg-scripts" if with_scripts else "dpkg-trigger",
        setup=f"{KERNEL_HOOKS}\ndpkg -i {trigger} >/dev/null",
        install="dpkg -i {pkg}", upgrade="dpkg -i {pkg}", reinstall="dpkg -i {pkg}", downgrade="dpkg -i {pkg}",
        remove="dpkg -r mx-dkms", purge="dpkg -P mx-dkms",
        kernel_and_module=f"dpkg -i {kpkg} >/dev/null\ndpkg -P linux-image-fake mx-dkms", packages=pkgs)


def apt(out: Path, kver: str) -> Client:
    """APT with our DPkg::Post-Invoke: work queued during the run is done once at its end."""
    pkgs = _module_debs(out, with_scripts=True)
    kpkg = _kernel_deb(out, kver)
    get = "DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends"
    return Client(
        "apt", setup=f"{KERNEL_HOOKS}\ncp {REPO}/apt.conf.d/90dkms-hooks /etc/apt/apt.conf.d/",
        install=f"{get} install {{pkg}}", upgrade=f"{get} install {{pkg}}",
        reinstall=f"{get} install --reinstall {{pkg}}", downgrade=f"{get} install --allow-downgrades {{pkg}}",
        remove=f"{get} remove mx-dkms", purge=f"{get} purge mx-dkms",
        kernel_and_module=f"{get} install {kpkg} >/dev/null\n{get} purge linux-image-fake mx-dkms", packages=pkgs)


# --- rpm ---------------------------------------------------------------------------------
RPM_HEADER = """Name: {name}
Version: {version}
Release: {release}
Summary: {name}
License: GPL
BuildArch: noarch
AutoReqProv: no
%description
{name}
"""


def rpm_package(top: Path, spec: str) -> Path:
    for d in ("SPECS", "RPMS", "BUILD", "BUILDROOT", "SOURCES", "SRPMS"):
        (top / d).mkdir(parents=True, exist_ok=True)
    path = top / "SPECS" / "x.spec"
    path.write_text(spec)
    subprocess.run(["rpmbuild", "--quiet", "-bb", f"--load={REPO}/hooks/rpm/macros.dkms-hooks",
                    "--define", f"_topdir {top}", str(path)], check=True, capture_output=True)
    return next((top / "RPMS/noarch").glob("*.rpm"))


def rpm(out: Path, kver: str, *, via: str) -> Client:
    """rpm with the %post/%preun/%posttrans macros in the module package, or with none and
    the file triggers of our package doing the work."""
    pkgs = {}
    for v, d in sources(out).items():
        version, release = v.split("-")
        scriptlets = (f"%post\n%dkms_hooks_post {NAME} {v}\n%preun\n%dkms_hooks_preun {NAME} {v}\n"
                      f"%posttrans\n%dkms_hooks_posttrans {NAME} {v}\n") if via == "macros" else ""
        pkgs[v] = rpm_package(out / f"rpm-{v}", RPM_HEADER.format(name="mx-kmod", version=version, release=release)
                              + f"%install\nmkdir -p %{{buildroot}}/usr/src\ncp -a {d} %{{buildroot}}/usr/src/\n"
                              f"%files\n/usr/src/{NAME}-{v}\n{scriptlets}")
    triggers = rpm_package(out / "rpm-triggers", RPM_HEADER.format(name="dkms-hooks", version="0.1", release="1")
                           + "%files\n\n" + (REPO / "hooks/rpm/dkms-hooks-triggers.spec.in").read_text())
    plugin = "/etc/kernel/install.d/40-dkms-hooks.install"
    # Fedora's kernel packages remove a kernel through kernel-install; only our plugin runs here
    kpkg = rpm_package(out / "rpm-kernel", RPM_HEADER.format(name="kernel-fake", version="1", release="1")
                       + f"%files\n\n%preun\nKERNEL_INSTALL_PLUGINS={plugin} kernel-install remove {kver}\n")
    # Debian 12's rpm refuses to install without --force-debian, Debian 13's has no such option
    r = f"rpm --root / --dbpath {out}/rpmdb --nodeps $force_debian"
    return Client(
        f"rpm-{via}",
        setup=("force_debian=$(rpm --help | grep -o -- --force-debian || true)\n"
               f"rpm --root / --dbpath {out}/rpmdb --initdb\nmkdir -p /etc/kernel/install.d\n"
               f"cp {REPO}/kernel-install.d/40-dkms-hooks.install {plugin}\n"
               + (f"{r} -i {triggers}" if via == "triggers" else "")),
        install=f"{r} -U {{pkg}}", upgrade=f"{r} -U {{pkg}}", reinstall=f"{r} -U --replacepkgs {{pkg}}",
        downgrade=f"{r} -U --oldpackage {{pkg}}", remove=f"{r} -e mx-kmod", purge=f"{r} -e mx-kmod",
        kernel_and_module=f"{r} -i {kpkg}\n{r} -e kernel-fake mx-kmod", packages=pkgs)


CLIENTS: dict[str, Callable[[Path, str], Client]] = {
    "pacman": pacman,
    "dpkg-trigger": lambda out, k: dpkg(out, k, with_scripts=False),
    "dpkg-scripts": lambda out, k: dpkg(out, k, with_scripts=True),
    "apt": apt,
    "rpm-macros": lambda out, k: rpm(out, k, via="macros"),
    "rpm-triggers": lambda out, k: rpm(out, k, via="triggers"),
}
