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
