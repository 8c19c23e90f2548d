"""dkms.conf directives and framework settings, each on a real module build, checked on disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import write_module

pytestmark = [pytest.mark.kernel, needs_kernel]


@pytest.fixture
def k(sandbox: Sandbox) -> str:
    sandbox.add_kernel(KERNELS[0])
    return KERNELS[0]


def conf_of(name: str, *lines: str, version: str = "1.0") -> str:
    return "\n".join([f'PACKAGE_NAME="{name}"', f'PACKAGE_VERSION="{version}"', f'BUILT_MODULE_NAME[0]="{name}"',
                      'DEST_MODULE_LOCATION[0]="/updates"', 'AUTOINSTALL="yes"', *lines, ""])


def built_ko(sandbox: Sandbox, name: str, k: str, version: str = "1.0") -> Path:
    return next((sandbox.dkms_tree / f"{name}/{version}/{k}/x86_64/module").glob(f"{name}.ko*"))


def sections(ko: Path) -> str:
    data = subprocess.run(["bash", "-c", f"xz -dcf {ko} 2>/dev/null || cat {ko}"], capture_output=True).stdout
    tmp = ko.with_name("plain.ko")
    tmp.write_bytes(data)
    out = subprocess.run(["readelf", "-S", str(tmp)], capture_output=True, text=True).stdout
    tmp.unlink()
    return out


def test_patches_applied_and_refused(sandbox: Sandbox, k: str) -> None:
    src = write_module(sandbox.source_tree, "patched", conf=conf_of("patched", 'PATCH[0]="fix.patch"',
                                                                     'PATCH[1]="other.patch"', "PATCH_MATCH[1]='^1\\.'"))
    (src / "patches").mkdir()
    (src / "patches/fix.patch").write_text(
        "--- a/patched.c\n+++ b/patched.c\n@@ -8 +8 @@\n-MODULE_VERSION(\"1.0\");\n+MODULE_VERSION(\"1.0-patched\");\n"
    )
    res = sandbox.dkms("build", "patched/1.0", "-k", k, check=True)
    assert "Applying patch fix.patch... done.\n" in res.stdout and "other.patch" not in res.stdout
    out = subprocess.run(["modinfo", "-F", "version", str(built_ko(sandbox, "patched", k))],
                         capture_output=True, text=True).stdout
    assert out.strip() == "1.0-patched"
    log = (sandbox.dkms_tree / f"patched/1.0/{k}/x86_64/log/make.log").read_text()
    assert "# command: patch -p1 < ./patches/fix.patch" in log

    bad = write_module(sandbox.source_tree, "badpatch", conf=conf_of("badpatch", 'PATCH[0]="../../etc/evil"'))
    assert bad.is_dir()
    res = sandbox.dkms("build", "badpatch/1.0", "-k", k)
    assert (res.returncode, res.stderr) == (
        5, "\nError! Patch ../../etc/evil as specified in dkms.conf contains '..' path component.\n")
    write_module(sandbox.source_tree, "nopatch", conf=conf_of("nopatch", 'PATCH[0]="missing.patch"'))
    res = sandbox.dkms("build", "nopatch/1.0", "-k", k)
    assert res.returncode == 5 and "cannot be\nfound in " in res.stderr
    fail = write_module(sandbox.source_tree, "failpatch", conf=conf_of("failpatch", 'PATCH[0]="x.patch"'))
    (fail / "patches").mkdir()
    (fail / "patches/x.patch").write_text("--- a/nothere.c\n+++ b/nothere.c\n@@ -1 +1 @@\n-a\n+b\n")
    res = sandbox.dkms("build", "failpatch/1.0", "-k", k)
    assert res.returncode == 6 and "Error! Application of patch x.patch failed." in res.stderr


def test_strip_no_keeps_debug_info(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "stripped")
    write_module(sandbox.source_tree, "kept", conf=conf_of("kept", 'STRIP[0]="no"'))
    sandbox.dkms("build", "stripped/1.0", "-k", k, check=True)
    sandbox.dkms("build", "kept/1.0", "-k", k, check=True)
    assert ".debug_info" not in sections(built_ko(sandbox, "stripped", k))
    assert ".debug_info" in sections(built_ko(sandbox, "kept", k))


def test_make_match_chooses_the_command(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "matched", conf=conf_of(
        "matched", 'MAKE[0]="false"', 'MAKE[1]="make -C ${kernel_source_dir} M=${dkms_tree}/matched/1.0/build"',
        f"MAKE_MATCH[1]='^{k.split('.')[0]}\\.'"))
    res = sandbox.dkms("build", "matched/1.0", "-k", k, check=True)
    assert "Building module(s)... done." in res.stdout


def test_build_depends_missing_is_exit_13(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "needy", conf=conf_of("needy", 'BUILD_DEPENDS[0]="provider"'))
    res = sandbox.dkms("build", "needy/1.0", "-k", k)
    assert res.returncode == 13
    assert res.stderr == (f"\nError! Aborting build of module needy/1.0 for kernel {k} (x86_64) due to missing "
                          "BUILD_DEPENDS: provider.\nYou may override by specifying --force.\n")
    res = sandbox.dkms("build", "needy/1.0", "-k", k, "--force", check=True)
    assert "despite of missing BUILD_DEPENDS: provider." in res.stderr


def test_build_depends_rebuild_after_dependency_update(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "provider", "1.0")
    write_module(sandbox.source_tree, "provider", "2.0")
    write_module(sandbox.source_tree, "consumer", conf=conf_of(
        "consumer", 'BUILD_DEPENDS[0]="provider"', 'BUILD_DEPENDS_REBUILD="yes"'))
    sandbox.dkms("install", "provider/1.0", "-k", k, check=True)
    sandbox.dkms("install", "consumer/1.0", "-k", k, check=True)
    dep = sandbox.dkms_tree / f"consumer/1.0/{k}/x86_64/.dep_provider"
    assert dep.read_text() == "1.0\n"
    res = sandbox.dkms("install", "provider/2.0", "-k", k, check=True)
    assert "Rebuilding module consumer/1.0 due to updated dependencies\n" in res.stdout
    assert dep.read_text() == "2.0\n"


@pytest.mark.parametrize("directive", ["BUILD_EXCLUSIVE_KERNEL_MIN=99.0", "BUILD_EXCLUSIVE_KERNEL_MAX=2.6",
                                       "BUILD_EXCLUSIVE_ARCH=aarch64", "CLEAN=make-clean"])
def test_exclusive_bounds_on_a_real_module(sandbox: Sandbox, k: str, directive: str) -> None:
    write_module(sandbox.source_tree, "bound", conf=conf_of("bound", directive))
    res = sandbox.dkms("build", "bound/1.0", "-k", k)
    if directive.startswith("CLEAN"):
        assert res.returncode == 0
        assert f"Deprecated feature: CLEAN ({sandbox.source_tree}/bound-1.0/dkms.conf)\n" in res.stderr
        assert built_ko(sandbox, "bound", k).is_file()
    else:
        assert res.returncode == 77
        assert not (sandbox.dkms_tree / f"bound/1.0/{k}").exists()


def test_obsolete_by_skips_newer_kernels(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "obs", conf=conf_of("obs", 'OBSOLETE_BY="5.0"'))
    res = sandbox.dkms("build", "obs/1.0", "-k", k)
    assert res.returncode == 77
    assert "Deprecated feature: OBSOLETE_BY" in res.stderr


def test_per_module_build_exclusive(sandbox: Sandbox, k: str) -> None:
    src = write_module(sandbox.source_tree, "pair", conf="\n".join([
        'PACKAGE_NAME="pair"', 'PACKAGE_VERSION="1.0"',
        'BUILT_MODULE_NAME[0]="pair"', 'DEST_MODULE_LOCATION[0]="/updates"',
        'BUILT_MODULE_NAME[1]="other"', 'DEST_MODULE_LOCATION[1]="/updates"',
        "BUILD_EXCLUSIVE_KERNEL[1]='^1\\.2\\.3'", ""]))
    (src / "Makefile").write_text("obj-m := pair.o\n")
    res = sandbox.dkms("install", "pair/1.0", "-k", k, check=True)
    installed = sorted(p.name.split(".")[0] for p in (sandbox.install_tree / k / "updates/dkms").iterdir())
    assert installed == ["pair"]
    assert "other" not in res.stdout


def test_scripts_run_with_the_right_directory(sandbox: Sandbox, k: str) -> None:
    src = write_module(sandbox.source_tree, "scr", conf=conf_of(
        "scr", 'POST_ADD="hook.sh add"', 'PRE_INSTALL="hook.sh pre_install"', 'POST_INSTALL="hook.sh post_install"',
        'POST_REMOVE="hook.sh post_remove"', 'POST_BUILD="hook.sh post_build"'))
    (src / "hook.sh").write_text('#!/bin/sh\necho "$1 in $(pwd)" >> "$HOOK_LOG"\n')
    (src / "hook.sh").chmod(0o755)
    log = sandbox.root / "hooks.log"
    env = {"HOOK_LOG": str(log)}
    assert "Running the post_add script:" in sandbox.dkms("add", "scr/1.0", env=env, check=True).stdout
    sandbox.dkms("install", "scr/1.0", "-k", k, env=env, check=True)
    sandbox.dkms("uninstall", "scr/1.0", "-k", k, env=env, check=True)
    src_dir = sandbox.dkms_tree / "scr/1.0/source"
    assert log.read_text().splitlines() == [
        f"add in {src_dir}",
        f"post_build in {sandbox.dkms_tree}/scr/1.0/build",
        f"pre_install in {src_dir}",
        f"post_install in {src_dir}",
        f"post_remove in {src_dir}",
    ]


def test_pre_install_failure_is_exit_101(sandbox: Sandbox, k: str) -> None:
    src = write_module(sandbox.source_tree, "veto", conf=conf_of("veto", 'PRE_INSTALL="no.sh"'))
    (src / "no.sh").write_text("#!/bin/sh\nexit 3\n")
    (src / "no.sh").chmod(0o755)
    res = sandbox.dkms("install", "veto/1.0", "-k", k)
    assert res.returncode == 101
    assert res.stderr.endswith("Error! pre_install failed, aborting install.\nYou may override by specifying --force.\n")
    assert not (sandbox.install_tree / k / "updates").exists()
    sandbox.dkms("install", "veto/1.0", "-k", k, "--force", check=True)


def test_etc_overrides_and_env_directives(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "over", conf=conf_of("over", 'BUILT_MODULE_NAME[0]="wrong"'))
    (sandbox.etc / "over.conf").write_text('BUILT_MODULE_NAME[0]="over"\n')
    sandbox.dkms("build", "over/1.0", "-k", k, check=True)
    assert built_ko(sandbox, "over", k).is_file()
    write_module(sandbox.source_tree, "envd", conf=conf_of("envd", 'DEST_MODULE_LOCATION[0]="/wrong"'))
    res = sandbox.dkms("install", "envd/1.0", "-k", k, env={"DKMS_DIRECTIVE_0": "DEST_MODULE_LOCATION=/extra"},
                       check=True)
    assert "Installing " in res.stdout


def test_deprecated_and_duplicate_directives(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "old", conf=conf_of("old", 'REMAKE_INITRD="yes"', 'MODULES_CONF[0]="x"'))
    res = sandbox.dkms("add", "old/1.0", check=True)
    conf = sandbox.source_tree / "old-1.0/dkms.conf"
    assert res.stderr == (f"Deprecated feature: REMAKE_INITRD ({conf})\n"
                          f"Deprecated feature: MODULES_CONF ({conf})\n")
    write_module(sandbox.source_tree, "twice", conf=conf_of("twice", 'BUILT_MODULE_NAME[1]="twice"',
                                                             'DEST_MODULE_LOCATION[1]="/extra"'))
    res = sandbox.dkms("add", "twice/1.0")
    assert res.returncode == 8
    assert "dkms.conf: Error! Duplicate module 'twice' in 'BUILT_MODULE_NAME[1]'." in res.stderr


def test_framework_compression_opts_symlinks_and_jobs(sandbox: Sandbox, tmp_path: Path) -> None:
    k = KERNELS[-1]
    sandbox.add_kernel(k)
    (sandbox.etc / "framework.conf").write_text(
        'compress_xz_opts="--check=crc32 -0"\ncompress_zstd_opts="-q --rm -1"\nsymlink_modules=1\nparallel_jobs=1\n'
    )
    config = tmp_path / "config"
    text = Path(f"/lib/modules/{k}/build/.config").read_text()
    config.write_text("".join(line + "\n" for line in text.splitlines() if "MODULE_COMPRESS" not in line)
                      + "CONFIG_MODULE_COMPRESS_XZ=y\n")
    write_module(sandbox.source_tree, "fw")
    sandbox.dkms("install", "fw/1.0", "-k", k, f"--config={config}", check=True)
    installed = sandbox.install_tree / k / "updates/dkms/fw.ko.xz"
    assert installed.is_symlink()
    assert installed.resolve() == built_ko(sandbox, "fw", k).resolve()
    log = (sandbox.dkms_tree / f"fw/1.0/{k}/x86_64/log/make.log").read_text()
    assert f"# command: make -j1 KERNELRELEASE={k}" in log


def test_try_sign_modules_false_and_generate_mok(sandbox: Sandbox, k: str) -> None:
    (sandbox.etc / "framework.conf").write_text("try_sign_modules=false\n")
    write_module(sandbox.source_tree, "nosign")
    res = sandbox.dkms("build", "nosign/1.0", "-k", k, check=True)
    assert "\nModule signing is disabled by policy, modules won't be signed\n\nBuilding" in res.stdout
    out = subprocess.run(["modinfo", "-F", "signer", str(built_ko(sandbox, "nosign", k))], capture_output=True,
                         text=True).stdout
    assert out.strip() == ""
    key, cert = sandbox.root / "keys/k.pem", sandbox.root / "keys/c.der"
    key.parent.mkdir()
    (sandbox.etc / "framework.conf").write_text(f'mok_signing_key="{key}"\nmok_certificate="{cert}"\n')
    res = sandbox.dkms("generate_mok", check=True)
    assert res.stdout == (f"Signing key: {key}\nPublic certificate (MOK): {cert}\n"
                          "Certificate or key are missing, generating self signed certificate for MOK...\n")
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "CN = DKMS module signing key" in text and "Code Signing" in text


@pytest.mark.parametrize(("os_id", "tool_path", "dest", "args"), [
    ("rhel", "usr/sbin/weak-modules", "extra", "--no-initramfs --add-modules"),
    ("opensuse-leap", "usr/lib/module-init-tools/weak-modules2", "updates", "--add-kernel-modules {k}"),
])
def test_weak_modules(sandbox: Sandbox, k: str, os_id: str, tool_path: str, dest: str, args: str) -> None:
    (sandbox.root / "etc/os-release").write_text(f'ID="{os_id}"\n')
    tool = sandbox.root / tool_path
    tool.parent.mkdir(parents=True)
    tool.write_text('#!/bin/sh\n{ echo "$@"; cat; } >> "$(dirname "$0")/weak.log"\n')
    tool.chmod(0o755)
    write_module(sandbox.source_tree, "weak")
    res = sandbox.dkms("install", "weak/1.0", "-k", k, check=True)
    assert "Adding linked weak modules...\n" in res.stdout
    ko = next((sandbox.install_tree / k / dest).glob("weak.ko*"))
    assert (tool.parent / "weak.log").read_text() == f"{args.format(k=k)}\n{ko}\n"
    res = sandbox.dkms("uninstall", "weak/1.0", "-k", k, check=True)
    assert "Removing linked weak modules...\n" in res.stdout


def test_build_environment_and_pkcs11_key(sandbox: Sandbox, k: str) -> None:
    env_file = sandbox.root / "build.env"
    env_file.write_text("export DKMS_HOOKS_TEST_FLAG=from-build-environment\n")
    signer = sandbox.root / "fake-sign-file"
    signer.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/sign.args"\n')
    signer.chmod(0o755)
    (sandbox.etc / "framework.conf").write_text(
        f'build_environment="{env_file}"\nsign_file="{signer}"\n'
        'mok_signing_key="pkcs11:token=dkms;object=key"\n'
        f'mok_certificate="{sandbox.root}/cert.der"\n'
    )
    (sandbox.root / "cert.der").write_bytes(b"not really a certificate")
    src = write_module(sandbox.source_tree, "envmod")
    (src / "Makefile").write_text('$(info flag=$(DKMS_HOOKS_TEST_FLAG))\nobj-m := envmod.o\n')
    res = sandbox.dkms("build", "envmod/1.0", "-k", k, check=True)
    assert "Certificate or key are missing" not in res.stdout
    log = (sandbox.dkms_tree / f"envmod/1.0/{k}/x86_64/log/make.log").read_text()
    assert "flag=from-build-environment" in log
    args = (sandbox.root / "sign.args").read_text().split()
    assert args[:3] == ["sha256", "pkcs11:token=dkms;object=key", f"{sandbox.root}/cert.der"]
    assert args[3] == f"{sandbox.dkms_tree}/envmod/1.0/build/envmod.ko"


def test_rpm_safe_upgrade_keeps_the_new_add(sandbox: Sandbox) -> None:
    """An RPM upgrade runs the new package's `dkms add` before the old one's `dkms remove`;
    both come from the same rpm process, and the remove must then do nothing."""
    import sys

    write_module(sandbox.source_tree, "rpmsafe")
    dkms = (f"{sys.executable} -m dkms_hooks --dkmstree {sandbox.dkms_tree} --sourcetree {sandbox.source_tree} "
            f"--installtree {sandbox.install_tree}")
    script = (f"(exec {dkms} add rpmsafe/1.0 --rpm_safe_upgrade); "
              f"(exec {dkms} remove rpmsafe/1.0 --all --rpm_safe_upgrade)")
    res = subprocess.run(["bash", "-c", script], env=sandbox.env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Remove cancelled because --rpm_safe_upgrade scenario detected." in res.stderr
    assert sandbox.dkms("status").stdout == "rpmsafe/1.0: added\n"


def test_build_exclusive_config_and_no_weak_modules(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "needcfg", conf=conf_of("needcfg", 'BUILD_EXCLUSIVE_CONFIG="CONFIG_NOPE_NOT_SET"'))
    assert sandbox.dkms("build", "needcfg/1.0", "-k", k).returncode == 77
    write_module(sandbox.source_tree, "hascfg", conf=conf_of("hascfg", 'BUILD_EXCLUSIVE_CONFIG="CONFIG_MODULES !CONFIG_NOPE"'))
    sandbox.dkms("build", "hascfg/1.0", "-k", k, check=True)
    assert built_ko(sandbox, "hascfg", k).is_file()
    (sandbox.root / "etc/os-release").write_text('ID="rhel"\n')
    write_module(sandbox.source_tree, "noweak", conf=conf_of("noweak", 'NO_WEAK_MODULES="yes"'))
    res = sandbox.dkms("install", "noweak/1.0", "-k", k, check=True)
    assert "linked weak modules" not in res.output and "weak-modules" not in res.output


def test_circular_build_depends_fail_autoinstall(sandbox: Sandbox, k: str) -> None:
    write_module(sandbox.source_tree, "chicken", conf=conf_of("chicken", 'BUILD_DEPENDS[0]="egg"'))
    write_module(sandbox.source_tree, "egg", conf=conf_of("egg", 'BUILD_DEPENDS[0]="chicken"'))
    for m in ("chicken", "egg"):
        sandbox.dkms("add", f"{m}/1.0", check=True)
    res = sandbox.dkms("autoinstall", "-k", k)
    assert res.returncode == 11
    assert "chicken/1.0 autoinstall failed due to missing dependencies: egg.\n" in res.stdout
    assert "egg/1.0 autoinstall failed due to missing dependencies: chicken.\n" in res.stdout


def test_mok_paths_may_name_the_kernel(sandbox: Sandbox, k: str) -> None:
    (sandbox.etc / "framework.conf").write_text(
        f'mok_signing_key="{sandbox.root}/keys-$kernelver/key"\nmok_certificate="{sandbox.root}/keys-$kernelver/cert"\n')
    (sandbox.root / f"keys-{k}").mkdir()
    write_module(sandbox.source_tree, "perkernel")
    res = sandbox.dkms("build", "perkernel/1.0", "-k", k, check=True)
    assert f"Signing key: {sandbox.root}/keys-{k}/key\n" in res.stdout
    ko = built_ko(sandbox, "perkernel", k)
    info = subprocess.run(["modinfo", str(ko)], capture_output=True, text=True).stdout
    assert "signer:         DKMS module signing key" in info and "sig_hashalgo:   sha256" in info


def test_modprobe_on_install_for_the_running_kernel(sandbox: Sandbox) -> None:
    """The running kernel cannot load a test module here: modprobe and systemctl are stand-ins
    that record their calls."""
    import os

    running = os.uname().release
    kdir = sandbox.install_tree / running
    kdir.mkdir(parents=True)
    (kdir / "build").symlink_to(f"/lib/modules/{KERNELS[0]}/build")
    fakebin = sandbox.root / "fakebin"
    fakebin.mkdir()
    for tool in ("modprobe", "systemctl"):
        (fakebin / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{sandbox.root}/calls.log"\n')
        (fakebin / tool).chmod(0o755)
    write_module(sandbox.source_tree, "probe")
    env = {"PATH": f"{fakebin}:{sandbox.env['PATH']}"}
    sandbox.dkms("build", "probe/1.0", "-k", running, env=env, check=True)
    # built with another kernel's headers: make its vermagic name the running kernel, or
    # install refuses it (as it should a module built for another kernel)
    built = next((sandbox.dkms_tree / "probe/1.0" / running).glob("*/module/probe.ko"))
    data = built.read_bytes()
    start = data.index(b"vermagic=") + len(b"vermagic=")
    end = data.index(b"\0", start)
    assert len(running) <= end - start
    built.write_bytes(data[:start] + running.encode().ljust(end - start) + data[end:])
    sandbox.dkms("install", "probe/1.0", "-k", running, "--modprobe-on-install", env=env, check=True)
    calls = (sandbox.root / "calls.log").read_text() if (sandbox.root / "calls.log").exists() else ""
    has_devices = any(Path("/sys/devices").rglob("modalias"))
    assert calls.startswith("modprobe -a -b -q ") == has_devices
