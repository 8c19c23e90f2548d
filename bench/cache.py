"""The build cache against building: a rebuild whose inputs did not change, and a second
host installing a fleet's modules from a registry (Debian's docker-registry on 127.0.0.1,
TLS and htpasswd, as in the tests). Upstream builds the same work in the same run.

Ours runs in sandbox roots under /tmp (DKMS_HOOKS_SYSROOT), upstream in the overlay's
system tree; both against the same headers, with depmod on the same module trees."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import registry as oci

#: a module of a realistic size: ten files, each pulling in the headers a driver does
HEAVY_C = """#include <linux/module.h>
#include <linux/fs.h>
#include <linux/slab.h>
#include <linux/netdevice.h>
#include <linux/pci.h>
#include <linux/usb.h>
int {name}_part{i}(void) {{ return {i}; }}
"""
MAIN_C = """#include <linux/module.h>
static int __init m_init(void) {{ return 0; }}
static void __exit m_exit(void) {{ }}
module_init(m_init); module_exit(m_exit);
MODULE_LICENSE("GPL"); MODULE_VERSION("1.0");
"""


def _run(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    res = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{res.stdout[-3000:]}")
    return took


def write_heavy(parent: Path, name: str, parts: int = 10) -> Path:
    src = parent / f"{name}-1.0"
    src.mkdir(parents=True, exist_ok=True)
    objs = []
    for i in range(parts):
        (src / f"part{i}.c").write_text(HEAVY_C.format(name=name, i=i))
        objs.append(f"part{i}.o")
    (src / "main.c").write_text(MAIN_C)
    (src / "Makefile").write_text(f"obj-m := {name}.o\n{name}-y := main.o {' '.join(objs)}\n")
    (src / "dkms.conf").write_text(f'PACKAGE_NAME="{name}"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="{name}"\n'
                                   'DEST_MODULE_LOCATION[0]="/updates"\nAUTOINSTALL="yes"\n')
    return src


#: our runs leave bench/run's mount namespace for the machine's: inside it, dkms (like
#: upstream, after Debian's ischroot) takes itself for a chroot and does not sign, and the
#: fleet needs the signing key
HOST_NS = ["nsenter", f"--mount=/proc/{os.environ.get('BENCH_HOST_NS_PID', '1')}/ns/mnt", "--"]
#: headers of kernels that exist only inside the overlay (the third kernel), unpacked for the
#: sandboxes where the machine's namespace can see them
HEADERS = Path("/tmp/bench-headers")


def headers_dir(kver: str) -> str:
    """Where a sandbox's ``build`` link for ``kver`` points, as seen from the machine."""
    if subprocess.run([*HOST_NS, "test", "-d", f"/lib/modules/{kver}/build/include"], check=False).returncode == 0:
        return f"/lib/modules/{kver}/build"
    src = HEADERS / f"usr/src/linux-headers-{kver}"
    if not src.is_dir():
        HEADERS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "-qq", f"linux-headers-{kver}"], cwd=HEADERS, check=True,
                       stderr=subprocess.DEVNULL)
        for d in HEADERS.glob(f"linux-headers-{kver}_*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(d), str(HEADERS)], check=True)
        # its scripts and tools links point at ../../lib/linux-kbuild-X: the machine's
        (HEADERS / "usr/lib").mkdir(parents=True, exist_ok=True)
        for kbuild in Path("/usr/lib").glob("linux-kbuild-*"):
            link = HEADERS / "usr/lib" / kbuild.name
            if not link.exists():
                link.symlink_to(kbuild)
    return str(src)


def sandbox(root: Path, kernels: list[str], toml: str = "") -> dict[str, str]:
    shutil.rmtree(root, ignore_errors=True)
    for d in ("var/lib/dkms", "usr/src", "etc/dkms/framework.conf.d"):
        (root / d).mkdir(parents=True)
    shutil.copy("/etc/os-release", root / "etc/os-release")
    for k in kernels:
        kdir = root / "lib/modules" / k
        kdir.mkdir(parents=True)
        (kdir / "build").symlink_to(headers_dir(k))
        for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if Path(f"/lib/modules/{k}/{f}").is_file():
                shutil.copy(f"/lib/modules/{k}/{f}", kdir / f)
        if Path(f"/lib/modules/{k}/modules.dep").is_file():
            (kdir / "modules.dep").touch()
    if toml:
        (root / "etc/dkms/dkms-hooks.toml").write_text(toml)
    return {**os.environ, "DKMS_HOOKS_SYSROOT": str(root), "DEBIAN_FRONTEND": "noninteractive"}


def repeat_build(ours: list[str], upstream: list[str], kver: str, reps: int) -> list[tuple[str, float, float]]:
    """Build once, take the build away, build again: upstream compiles again, ours hits."""
    ours = [*HOST_NS, *ours]
    name = "benchheavy"
    shutil.rmtree(f"/usr/src/{name}-1.0", ignore_errors=True)
    write_heavy(Path("/usr/src"), name)
    env = {**os.environ}
    _run([*upstream, "add", f"{name}/1.0"], env)
    up = []
    for _ in range(reps):
        up.append(_run([*upstream, "build", f"{name}/1.0", "-k", kver], env))
        _run([*upstream, "unbuild", f"{name}/1.0", "-k", kver], env)
    _run([*upstream, "remove", f"{name}/1.0", "--all"], env)

    root = Path("/tmp/bench-cache-host")
    senv = sandbox(root, [kver])
    write_heavy(root / "usr/src", name)
    _run([*ours, "add", f"{name}/1.0"], senv)
    miss, hit = [], []
    for _ in range(reps):
        _run([*ours, "cache", "clear"], senv)
        miss.append(_run([*ours, "build", f"{name}/1.0", "-k", kver], senv))
        _run([*ours, "unbuild", f"{name}/1.0", "-k", kver], senv)
        hit.append(_run([*ours, "build", f"{name}/1.0", "-k", kver], senv))
        _run([*ours, "unbuild", f"{name}/1.0", "-k", kver], senv)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(f"/usr/src/{name}-1.0", ignore_errors=True)
    m = statistics.median
    return [("one build, inputs unchanged: upstream compiles again vs ours from the cache", m(up), m(hit)),
            ("one build, inputs unchanged: ours first (make) vs again (cache)", m(miss), m(hit)),
            ("one build, first time: upstream vs ours (which also keeps the entry)", m(up), m(miss))]


def fleet(ours: list[str], upstream: list[str], kernels: list[str], modules: list[str],
          kind: str) -> list[tuple[str, float, float]]:
    """Host A builds and pushes; host B installs the same modules for the same kernels from
    the registry. Against upstream and against ours building them on B."""
    ours = [*HOST_NS, *ours]
    work = Path("/tmp/bench-fleet")
    shutil.rmtree(work, ignore_errors=True)
    reg = oci.start_registry(work / "registry")
    try:
        keys = work / "keys"
        keys.mkdir()
        subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=fleet", "-outform", "DER", "-keyout", str(keys / "fleet.key"),
                        "-out", str(keys / "fleet.der")], check=True, capture_output=True)

        def toml(push: bool) -> str:
            return (f'[cache]\nremote = "oci://{reg.host}/fleet/modules"\npush = {str(push).lower()}\n'
                    'registry_auth = "/etc/dkms/registry.json"\nca_file = "/etc/dkms/registry-ca.pem"\n'
                    'trusted_certificates = ["/etc/dkms/fleet.der"]\n')

        def host(name: str, text: str, fleet_key: bool = False) -> dict[str, str]:
            root = work / name
            env = sandbox(root, kernels, text)
            # the settings name files under the host's root (DKMS_HOOKS_SYSROOT)
            shutil.copy(reg.auth_file, root / "etc/dkms/registry.json")
            shutil.copy(reg.ca, root / "etc/dkms/registry-ca.pem")
            shutil.copy(keys / "fleet.der", root / "etc/dkms/fleet.der")
            if fleet_key:
                (root / "etc/dkms/framework.conf.d/fleet.conf").write_text(
                    f"mok_signing_key={keys / 'fleet.key'}\nmok_certificate={keys / 'fleet.der'}\n")
            for n in modules:
                shutil.copytree(f"/usr/src/{n}-1.0", root / f"usr/src/{n}-1.0")
                _run([*ours, "add", f"{n}/1.0"], env)
            return env

        def install_all(cmd: list[str], env: dict[str, str]) -> float:
            return sum(_run([*cmd, "autoinstall", "-k", k], env) for k in kernels)

        a = host("a", toml(True), fleet_key=True)
        built_a = install_all(ours, a)
        b = host("b", toml(False))
        pulled = install_all(ours, b)
        c = host("c", "[cache]\nenabled = false\n")
        built_c = install_all(ours, c)
        # the same work for upstream: its depmod runs on /lib/modules, so the kernel's own
        # modules (4000 of them for an installed kernel) are covered by an empty directory in
        # this mount namespace (bench/run's), leaving what the sandboxes have
        empty = work / "empty"
        empty.mkdir()
        hidden = [d for k in kernels if (d := Path(f"/lib/modules/{k}/kernel")).is_dir()]
        for d in hidden:
            subprocess.run(["mount", "--bind", str(empty), str(d)], check=True)
        try:
            for n in modules:
                _run([*upstream, "add", f"{n}/1.0"], dict(os.environ))
            up = install_all(upstream, dict(os.environ))
            for n in modules:
                _run([*upstream, "remove", f"{n}/1.0", "--all"], dict(os.environ))
        finally:
            for d in hidden:
                subprocess.run(["umount", str(d)], check=False)
        def files(host: str) -> dict[str, bytes]:
            base = work / host / "lib/modules"
            return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.glob("*/updates/dkms/*.ko*"))}

        fa, fb = files("a"), files("b")
        if fa != fb or len(fb) != len(modules) * len(kernels):
            differ = sorted(n for n in set(fa) | set(fb) if fa.get(n) != fb.get(n))
            notes = [p.read_text() for p in (work / "b").glob("var/lib/dkms/.dkms-hooks/builds/*/*/*.json")]
            raise SystemExit(f"host B's modules are not host A's: {differ}\n" + "".join(notes))
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    label = f"{len(modules)} {kind} modules x {len(kernels)} kernels, host B"
    return [(f"{label}: upstream builds vs ours from the registry", up, pulled),
            (f"{label}: ours builds vs ours from the registry", built_c, pulled),
            (f"{label}: host A builds and pushes vs B from the registry", built_a, pulled)]
