"""Small real module sources for tests, written on the fly."""

from __future__ import annotations

from pathlib import Path

C_TEMPLATE = """\
#include <linux/init.h>
#include <linux/module.h>
static int __init m_init(void) {{ pr_info("{name}: loaded\\n"); return 0; }}
static void __exit m_exit(void) {{ }}
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("{version}");
MODULE_DESCRIPTION("{name} test module");
{extra}
"""


def write_module(
    parent: Path,
    name: str,
    version: str = "1.0",
    *,
    conf: str | None = None,
    extra_c: str = "",
    module_version: str | None = None,
) -> Path:
    """``parent/<name>-<version>`` with a .c, a kbuild Makefile and a dkms.conf."""
    src = parent / f"{name}-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / f"{name}.c").write_text(
        C_TEMPLATE.format(name=name, version=module_version or version, extra=extra_c)
    )
    (src / "Makefile").write_text(f"obj-m := {name}.o\n")
    if conf is None:
        conf = (
            f'PACKAGE_NAME="{name}"\nPACKAGE_VERSION="{version}"\n'
            f'BUILT_MODULE_NAME[0]="{name}"\nDEST_MODULE_LOCATION[0]="/updates"\nAUTOINSTALL="yes"\n'
        )
    (src / "dkms.conf").write_text(conf)
    return src


def write_overlap_probe(parent: Path, name: str, marks: Path) -> Path:
    """A module whose Makefile, while a kernel's make reads it, looks for another kernel's
    make in flight and notes what it saw in ``marks``; see :func:`builds_overlapped`.

    A make that finds no trace of another kernel yet waits for one (up to 30 s) rather than a
    fixed time: on a loaded machine builds that do run side by side may start seconds apart,
    while builds run one after the other still leave no overlap to see."""
    src = write_module(parent, name)
    marks.mkdir(exist_ok=True)
    own = "-x -F -e in-$(KERNELRELEASE) -e seen-$(KERNELRELEASE)"
    (src / "Makefile").write_text(
        f"obj-m := {name}.o\n"
        f"$(shell mkdir -p {marks}/in-$(KERNELRELEASE); i=0; "
        f"until ls {marks} | grep -v {own} | grep -q . || [ $$i -ge 150 ]; do i=$$((i+1)); sleep 0.2; done; "
        f"sleep 1; ls {marks} >> {marks}/seen-$(KERNELRELEASE); rmdir {marks}/in-$(KERNELRELEASE))\n")
    return src


def builds_overlapped(marks: Path, kernels: list[str]) -> bool:
    """Whether one kernel's make saw another's in flight."""
    seen = {k: (marks / f"seen-{k}").read_text() for k in kernels}
    return any(f"in-{other}" in seen[k] for k in kernels for other in kernels if other != k)
