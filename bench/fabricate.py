"""Make a dkms tree with N modules built and installed for every given kernel, by building
one real module per kernel and copying it under N names (status does not rebuild anything,
so copies of a real .ko are enough to measure it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

C = """#include <linux/module.h>
static int __init m_init(void) { return 0; }
static void __exit m_exit(void) { }
module_init(m_init); module_exit(m_exit);
MODULE_LICENSE("GPL"); MODULE_VERSION("1.0");
"""


def conf(name: str) -> str:
    return (f'PACKAGE_NAME="{name}"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="{name}"\n'
            'DEST_MODULE_LOCATION[0]="/updates"\nAUTOINSTALL="yes"\n')


def fabricate(root: Path, kernels: list[str], count: int, dkms: list[str]) -> None:
    """root gets var/lib/dkms, usr/src and lib/modules/<kver> (build linked to the real headers)."""
    for k in kernels:
        (root / "lib/modules" / k).mkdir(parents=True, exist_ok=True)
        link = root / "lib/modules" / k / "build"
        if not link.exists():
            link.symlink_to(f"/lib/modules/{k}/build")
    src = root / "usr/src/bench0000-1.0"
    src.mkdir(parents=True, exist_ok=True)
    (src / "bench0000.c").write_text(C)
    (src / "Makefile").write_text("obj-m := bench0000.o\n")
    (src / "dkms.conf").write_text(conf("bench0000"))
    trees = ["--dkmstree", str(root / "var/lib/dkms"), "--sourcetree", str(root / "usr/src"),
             "--installtree", str(root / "lib/modules")]
    kargs = [a for k in kernels for a in ("-k", k)]
    subprocess.run([*dkms, *trees, "install", "bench0000/1.0", *kargs, "--no-depmod"], check=True,
                   stdout=subprocess.DEVNULL)
    tree = root / "var/lib/dkms"
    for i in range(1, count):
        name = f"bench{i:04d}"
        s = root / f"usr/src/{name}-1.0"
        if s.exists():
            continue
        shutil.copytree(src, s)
        (s / "dkms.conf").write_text(conf(name))
        vdir = tree / name / "1.0"
        vdir.mkdir(parents=True)
        (vdir / "source").symlink_to(s)
        (vdir / "build").mkdir()
        for k in kernels:
            base = tree / "bench0000/1.0" / k / "x86_64"
            dest = vdir / k / "x86_64"
            shutil.copytree(base, dest, symlinks=True)
            for ko in (dest / "module").glob("bench0000.ko*"):
                ko.rename(ko.with_name(ko.name.replace("bench0000", name)))
            (tree / name / f"kernel-{k}-x86_64").symlink_to(f"1.0/{k}/x86_64")
            for ko in (root / "lib/modules" / k / "updates/dkms").glob("bench0000.ko*"):
                shutil.copy2(ko, ko.with_name(ko.name.replace("bench0000", name)))


if __name__ == "__main__":
    target = Path(sys.argv[1])
    n = int(sys.argv[2])
    ks = sys.argv[3:]
    fabricate(target, ks, n, [sys.executable, "-m", "dkms_hooks"])
    print(f"{n} modules x {len(ks)} kernels in {target}")
    _ = os
