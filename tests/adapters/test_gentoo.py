"""The eclass, sourced by bash in a minimal ebuild-like environment: it writes a dkms.conf
from the module list, and its pkg_postinst / pkg_prerm drive the engine in ROOT."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, REPO, Sandbox, needs_kernel

ECLASS = REPO / "ebuild/eclass/dkms-hooks.eclass"


def ebuild_env(sandbox: Sandbox, src: Path, dkms_bin: str, body: str) -> subprocess.CompletedProcess[str]:
    script = f"""
set -e
EAPI=8 PN=dkms_hooks_example PV=1.0 S={src} ED={sandbox.root} ROOT={sandbox.root}/ KV_FULL={KERNELS[0]}
MAKEOPTS="-j2"
inherit() {{ :; }}
EXPORT_FUNCTIONS() {{ :; }}
die() {{ echo "die: $*" >&2; exit 1; }}
ewarn() {{ echo "ewarn: $*" >&2; }}
tc-getCC() {{ echo gcc; }}
source {ECLASS}
{body}
"""
    env = {k: v for k, v in sandbox.env.items() if k != "DKMS_HOOKS_SYSROOT"}
    env["PATH"] = f"{dkms_bin}:{env['PATH']}"
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)


def test_dkms_conf_generated_from_the_module_list(sandbox: Sandbox, tmp_path: Path, dkms_on_path: str) -> None:
    src = tmp_path / "work"
    shutil.copytree(EXAMPLE, src)
    (src / "dkms.conf").unlink()
    res = ebuild_env(sandbox, src, dkms_on_path,
                     'DKMS_HOOKS_MODULES=( "dkms_hooks_example:.:extra" )\ndkms-hooks_dopackage')
    assert res.returncode == 0, res.stderr
    conf = (sandbox.source_tree / "dkms_hooks_example-1.0/dkms.conf").read_text()
    assert 'BUILT_MODULE_NAME[0]="dkms_hooks_example"' in conf
    assert 'MAKE[0]="make -j2 CC=gcc  -C ${kernel_source_dir} M=${dkms_tree}/dkms_hooks_example/1.0/build"' in conf
    assert 'DEST_MODULE_LOCATION[0]="/extra"' in conf


@pytest.mark.kernel
@needs_kernel
def test_postinst_and_prerm(sandbox: Sandbox, tmp_path: Path, dkms_on_path: str) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    src = tmp_path / "work"
    shutil.copytree(EXAMPLE, src)
    (src / "dkms.conf").unlink()
    res = ebuild_env(sandbox, src, dkms_on_path, """
DKMS_HOOKS_MODULES=( "dkms_hooks_example:.:extra" )
dkms-hooks_dopackage
dkms-hooks_pkg_postinst
""")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"  installed  dkms_hooks_example/1.0, {k}\n" in res.stdout
    assert list((sandbox.install_tree / k / "updates/dkms").glob("dkms_hooks_example.ko*"))
    res = ebuild_env(sandbox, src, dkms_on_path, "dkms-hooks_pkg_prerm")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "  removed    dkms_hooks_example/1.0\n" in res.stdout
    assert not list((sandbox.install_tree / k).rglob("dkms_hooks_example.ko*"))


@pytest.mark.kernel
@needs_kernel
def test_a_reinstall_keeps_the_module_and_an_upgrade_drops_only_the_old_version(
        sandbox: Sandbox, tmp_path: Path, dkms_on_path: str) -> None:
    """Portage runs the old copy's pkg_prerm after the new copy's pkg_postinst. Version 2.0
    here is the same source as 1.0: its module's version string did not change."""
    k = KERNELS[0]
    sandbox.add_kernel(k)
    src = tmp_path / "work"
    shutil.copytree(EXAMPLE, src)
    (src / "dkms.conf").unlink()
    steps = """
DKMS_HOOKS_MODULES=( "dkms_hooks_example:.:extra" )
dkms-hooks_dopackage
dkms-hooks_pkg_postinst
"""
    assert ebuild_env(sandbox, src, dkms_on_path, steps).returncode == 0
    for replaced_by in ("1.0", "1.0-r1"):  # a reinstall, a new revision
        res = ebuild_env(sandbox, src, dkms_on_path, steps + f"REPLACED_BY_VERSION={replaced_by} dkms-hooks_pkg_prerm")
        assert res.returncode == 0, res.stdout + res.stderr
        assert sandbox.dkms("status").stdout == f"dkms_hooks_example/1.0, {k}, x86_64: installed\n"
    # version 2.0 is merged, then 1.0's pkg_prerm runs
    res = ebuild_env(sandbox, src, dkms_on_path, steps.replace("dkms-hooks_dopackage", "PV=2.0 dkms-hooks_dopackage")
                     .replace("dkms-hooks_pkg_postinst", "PV=2.0 dkms-hooks_pkg_postinst")
                     + "REPLACED_BY_VERSION=2.0 dkms-hooks_pkg_prerm")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "  removed    dkms_hooks_example/1.0\n" in res.stdout
    assert sandbox.dkms("status").stdout == f"dkms_hooks_example/2.0, {k}, x86_64: installed\n"
    assert [p.name for p in (sandbox.install_tree / k).rglob("dkms_hooks_example.ko*")] != []
