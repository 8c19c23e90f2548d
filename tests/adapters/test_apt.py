"""The Debian hooks driven by the real dpkg: a headers package whose postinst runs the
header_postinst.d hooks, a module source package with the dh_dkms-like scripts, and the
/usr/src file trigger. dpkg runs on a private root (--root, chrootless scripts), so the
hooks see DPKG_ROOT and work inside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, REPO, Sandbox, needs_kernel

pytestmark = [
    pytest.mark.kernel,
    needs_kernel,
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb missing"),
]


def build_deb(out: Path, name: str, files: dict[str, str | Path], scripts: dict[str, str] | None = None,
              control_extra: dict[str, str] | None = None, version: str = "1.0") -> Path:
    root = out / f"pkg-{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: test <t@example.invalid>\n"
        f"Description: {name}\n")
    for path, content in files.items():
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            if content.is_dir():
                shutil.copytree(content, dest)
            else:
                dest.symlink_to(content)
        else:
            dest.write_text(content)
    for script, body in (scripts or {}).items():
        (root / "DEBIAN" / script).write_text(body)
        (root / "DEBIAN" / script).chmod(0o755)
    for fname, body in (control_extra or {}).items():
        (root / "DEBIAN" / fname).write_text(body)
    deb = out / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def dpkg(sandbox: Sandbox, dkms_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = sandbox.root
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "var/lib/dpkg/status").touch()
    env = {k: v for k, v in sandbox.env.items() if k != "DKMS_HOOKS_SYSROOT"}
    env["PATH"] = f"{dkms_bin}:/usr/sbin:/usr/bin:/sbin:/bin"
    return subprocess.run(["dpkg", f"--root={r}", f"--log={r}/var/log/dpkg.log", "--force-script-chrootless",
                           "--force-not-root", *args], env=env, capture_output=True, text=True)


def install_hooks(sandbox: Sandbox) -> None:
    for d in ("postinst.d", "preinst.d", "prerm.d", "header_postinst.d"):
        dest = sandbox.root / "etc/kernel" / d
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "hooks/kernel" / d / "dkms-hooks", dest / "dkms-hooks")


def headers_deb(tmp_path: Path, kver: str) -> Path:
    postinst = ('#!/bin/sh\nset -e\n[ "$1" = configure ] || exit 0\n'
                f'run-parts --report --exit-on-error --arg={kver} "${{DPKG_ROOT}}/etc/kernel/header_postinst.d"\n')
    return build_deb(tmp_path, "linux-headers-test", {f"/lib/modules/{kver}/build": Path(f"/lib/modules/{kver}/build")},
                     {"postinst": postinst})


def source_deb(tmp_path: Path, *, with_scripts: bool) -> Path:
    scripts = {}
    if with_scripts:
        for kind in ("postinst", "prerm"):
            text = (REPO / f"hooks/dpkg/module-source.{kind}").read_text()
            scripts[kind] = text.replace("#MODULE_NAME#", "dkms_hooks_example").replace("#MODULE_VERSION#", "1.0")
    return build_deb(tmp_path, "example-dkms", {"/usr/src/dkms_hooks_example-1.0": EXAMPLE}, scripts)


def test_module_package_then_headers_package(sandbox: Sandbox, tmp_path: Path, dkms_on_path: str) -> None:
    k = KERNELS[0]
    install_hooks(sandbox)
    res = dpkg(sandbox, dkms_on_path, "-i", str(source_deb(tmp_path, with_scripts=True)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "  added      dkms_hooks_example/1.0\n" in res.stdout  # no headers yet: registered only
    res = dpkg(sandbox, dkms_on_path, "-i", str(headers_deb(tmp_path, k)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"  installed  dkms_hooks_example/1.0, {k}\n" in res.stdout
    ko = list((sandbox.install_tree / k / "updates/dkms").glob("dkms_hooks_example.ko*"))
    assert ko and ko[0].is_file()
    res = dpkg(sandbox, dkms_on_path, "-P", "example-dkms")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "  removed    dkms_hooks_example/1.0\n" in res.stdout
    assert not list((sandbox.install_tree / k).rglob("dkms_hooks_example.ko*"))
    assert not (sandbox.dkms_tree / "dkms_hooks_example").exists()


def test_file_trigger_on_usr_src(sandbox: Sandbox, tmp_path: Path, dkms_on_path: str) -> None:
    k = KERNELS[0]
    install_hooks(sandbox)
    trigger_pkg = build_deb(tmp_path, "dkms-hooks-trigger", {}, {"postinst": (REPO / "hooks/dpkg/postinst").read_text()},
                            {"triggers": (REPO / "hooks/dpkg/triggers").read_text()})
    for deb in (trigger_pkg, headers_deb(tmp_path, k)):
        res = dpkg(sandbox, dkms_on_path, "-i", str(deb))
        assert res.returncode == 0, res.stdout + res.stderr
    # a module source package with no dkms scripts at all: the trigger finds it
    res = dpkg(sandbox, dkms_on_path, "-i", str(source_deb(tmp_path, with_scripts=False)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Processing triggers for dkms-hooks-trigger" in res.stdout
    assert f"  installed  dkms_hooks_example/1.0, {k}\n" in res.stdout
    res = dpkg(sandbox, dkms_on_path, "-P", "example-dkms")
    assert res.returncode == 0, res.stdout + res.stderr
    # the source went away under a registered module: the trigger unregisters it
    assert "  removed    dkms_hooks_example/1.0\n" in res.stdout
    assert not list((sandbox.install_tree / k).rglob("dkms_hooks_example.ko*"))
