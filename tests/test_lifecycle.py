"""The module lifecycle on real kernel headers: real kbuild, sign-file, xz/zstd, depmod -b,
checked with the real modinfo."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel
from modsrc import write_module

from dkms_hooks.model.kernel import Compression, kmod_can_read

pytestmark = [pytest.mark.kernel, needs_kernel]


def modinfo(path: Path, field: str) -> str:
    return subprocess.run(["modinfo", "-F", field, str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def kconfig_compression(kver: str) -> str:
    text = Path(f"/lib/modules/{kver}/build/.config").read_text()
    for name, ext in (("GZIP", ".gz"), ("XZ", ".xz"), ("ZSTD", ".zst")):
        if f"CONFIG_MODULE_COMPRESS_{name}=y" in text:
            return ext
    return ""


def test_lifecycle_on_every_kernel(sandbox: Sandbox) -> None:
    for k in KERNELS:
        sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    res = sandbox.dkms("add", "dkms_hooks_example/1.0", check=True)
    assert res.stdout == (f"Creating symlink {sandbox.dkms_tree}/dkms_hooks_example/1.0/source -> "
                          f"{sandbox.source_tree}/dkms_hooks_example-1.0\n")
    kargs = [a for k in KERNELS for a in ("-k", k)]
    res = sandbox.dkms("build", "dkms_hooks_example/1.0", *kargs, check=True)
    assert res.stdout.count("Building module(s)... done.") == len(KERNELS)
    assert sandbox.dkms("status").stdout == "".join(
        f"dkms_hooks_example/1.0, {k}, x86_64: built\n" for k in KERNELS)
    for k in KERNELS:
        log = (sandbox.dkms_tree / f"dkms_hooks_example/1.0/{k}/x86_64/log/make.log").read_text()
        assert log.startswith(f"DKMS (dkms-3.4.3) make.log for dkms_hooks_example/1.0 for kernel {k} (x86_64)\n")
        # several kernels build side by side, their makes sharing one jobserver instead of -jN
        assert "# command: make KERNELRELEASE=" in log and f"KERNELRELEASE={k} -C {sandbox.install_tree}/{k}/build" in log
        assert "# exit code: 0\n# elapsed time: 00:00:" in log
    assert not (sandbox.dkms_tree / "dkms_hooks_example/1.0/build").exists()

    res = sandbox.dkms("install", "dkms_hooks_example/1.0", *kargs, check=True)
    for k in KERNELS:
        ext = kconfig_compression(k)
        ko = sandbox.install_tree / k / f"updates/dkms/dkms_hooks_example.ko{ext}"
        assert f"Installing {ko}\n" in res.stdout
        assert ko.is_file()
        assert modinfo(ko, "vermagic").split()[0] == k
        assert modinfo(ko, "version") == "1.0"
        assert modinfo(ko, "signer") == "DKMS module signing key"
        # depmod -b ran on the sandbox tree, never on the host's
        assert f"updates/dkms/dkms_hooks_example.ko{ext}:" in (sandbox.install_tree / k / "modules.dep").read_text()
        assert (sandbox.dkms_tree / f"dkms_hooks_example/kernel-{k}-x86_64").readlink() == Path(
            f"1.0/{k}/x86_64")
    assert (sandbox.dkms_tree / "mok.key").is_file() and (sandbox.dkms_tree / "mok.pub").is_file()
    assert sandbox.dkms("status").stdout == "".join(
        f"dkms_hooks_example/1.0, {k}, x86_64: installed\n" for k in KERNELS)

    k = KERNELS[0]
    ko = sandbox.install_tree / k / f"updates/dkms/dkms_hooks_example.ko{kconfig_compression(k)}"
    res = sandbox.dkms("uninstall", "dkms_hooks_example/1.0", "-k", k, check=True)
    assert res.stdout == (
        f"Module dkms_hooks_example/1.0 for kernel {k} (x86_64):\n"
        "Before uninstall, this module version was ACTIVE on this kernel.\n"
        f"Deleting {ko}\nRunning depmod... done.\n"
    )
    assert not ko.exists()
    # the sandbox kernel has no other module: an empty modules.dep is cleaned up, as upstream does
    dep = sandbox.install_tree / k / "modules.dep"
    assert not dep.exists() or "dkms_hooks_example" not in dep.read_text()
    assert f"dkms_hooks_example/1.0, {k}, x86_64: built\n" in sandbox.dkms("status").stdout
    sandbox.dkms("unbuild", "dkms_hooks_example/1.0", "-k", k, check=True)
    assert not (sandbox.dkms_tree / f"dkms_hooks_example/1.0/{k}").exists()

    res = sandbox.dkms("remove", "dkms_hooks_example/1.0", "--all", check=True)
    assert res.stdout.endswith("Deleting module dkms_hooks_example/1.0 completely from the DKMS tree.\n")
    assert sandbox.dkms("status").stdout == ""
    assert not (sandbox.dkms_tree / "dkms_hooks_example").exists()
    assert (sandbox.source_tree / "dkms_hooks_example-1.0/dkms.conf").is_file()
    for k in KERNELS:
        assert not list((sandbox.install_tree / k).rglob("dkms_hooks_example.ko*"))


def test_failed_build_keeps_log_and_leaves_module_added(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "broken", extra_c="this is not C;")
    sandbox.dkms("add", "broken/1.0", check=True)
    res = sandbox.dkms("build", "broken/1.0", "-k", k)
    build_dir = sandbox.dkms_tree / "broken/1.0/build"
    assert res.returncode == 10
    assert "Building module(s)...(bad exit status: 2)\nFailed command:\nmake -j" in res.stdout
    assert res.stderr == (f"\nError! Bad return status for module build on kernel: {k} (x86_64)\n"
                          f"Consult {build_dir}/make.log for more information.\n")
    log = (build_dir / "make.log").read_text()
    assert "error:" in log and "# exit code: 2" in log
    assert sandbox.dkms("status").stdout == "broken/1.0: added\n"
    assert not (sandbox.dkms_tree / f"broken/1.0/{k}").exists()


def test_missing_ko_is_exit_7(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    conf = ('PACKAGE_NAME=wrongname\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=nothere\n'
            'DEST_MODULE_LOCATION[0]=/extra\n')
    src = write_module(sandbox.source_tree, "wrongname", conf=conf)
    assert src.is_dir()
    res = sandbox.dkms("build", "wrongname/1.0", "-k", k)
    assert res.returncode == 7
    assert f"Error! Build of nothere.ko failed for: {k} (x86_64)" in res.stderr


def test_headers_missing(sandbox: Sandbox) -> None:
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", "dkms_hooks_example/1.0", check=True)
    before = sandbox.snapshot()
    res = sandbox.dkms("build", "dkms_hooks_example/1.0", "-k", "9.9.9-none")
    assert res.returncode == 21
    assert "Your kernel headers for kernel 9.9.9-none cannot be found at" in res.stderr
    assert sandbox.snapshot() == before


@pytest.mark.parametrize(("option", "ext", "magic"), [("ZSTD", ".zst", b"\x28\xb5\x2f\xfd"),
                                                     ("GZIP", ".gz", b"\x1f\x8b")])
def test_compression_follows_kernel_config(sandbox: Sandbox, tmp_path: Path, option: str, ext: str,
                                           magic: bytes) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k, installed=False)
    sandbox.add_source(EXAMPLE)
    config = tmp_path / "config"
    text = Path(f"/lib/modules/{k}/build/.config").read_text()
    text = "".join(line + "\n" for line in text.splitlines() if not line.startswith("CONFIG_MODULE_COMPRESS"))
    config.write_text(text + f"CONFIG_MODULE_COMPRESS_{option}=y\n")
    sandbox.dkms("install", "dkms_hooks_example/1.0", "-k", k, f"--config={config}", check=True)
    if not kmod_can_read(Compression(ext)):
        # this host's kmod could not load such a module: it stays uncompressed
        assert (sandbox.install_tree / k / "updates/dkms/dkms_hooks_example.ko").is_file()
        return
    ko = sandbox.install_tree / k / f"updates/dkms/dkms_hooks_example.ko{ext}"
    assert ko.read_bytes()[:len(magic)] == magic
    # signed before it was compressed: the signature survives decompression (Debian's kmod
    # cannot read .gz modules, so the check runs on a decompressed copy)
    plain = tmp_path / "plain.ko"
    plain.write_bytes(subprocess.run(["bash", "-c", f"zstd -dcq {ko} 2>/dev/null || gzip -dc {ko}"],
                                     capture_output=True, check=True).stdout)
    assert modinfo(plain, "signer") == "DKMS module signing key"


def test_missing_sign_file_gives_unsigned_module(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    (sandbox.etc / "framework.conf.d/sign.conf").write_text('sign_file="/no/such/sign-file"\n')
    res = sandbox.dkms("build", "dkms_hooks_example/1.0", "-k", k, check=True)
    assert res.stdout.splitlines()[2:4] == ["Sign command: /no/such/sign-file",
                                            "Binary /no/such/sign-file not found, modules won't be signed"]
    ko = next((sandbox.dkms_tree / f"dkms_hooks_example/1.0/{k}/x86_64/module").glob("*.ko*"))
    assert modinfo(ko, "signer") == ""


def plant_intree_module(sandbox: Sandbox, k: str, name: str, version: str) -> Path:
    """Build ``name`` at ``version`` and leave only a copy of it in the kernel's own tree, as if
    the kernel shipped it (kernel/drivers/misc/); dkms forgets it again."""
    write_module(sandbox.source_tree, name, version)
    sandbox.dkms("build", f"{name}/{version}", "-k", k, check=True)
    built = next((sandbox.dkms_tree / f"{name}/{version}/{k}/x86_64/module").glob(f"{name}.ko*"))
    intree = sandbox.install_tree / k / "kernel/drivers/misc" / built.name
    intree.parent.mkdir(parents=True)
    intree.write_bytes(built.read_bytes())
    sandbox.dkms("remove", f"{name}/{version}", "--all", check=True)
    return intree


def test_original_module_is_kept_and_restored(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    intree = plant_intree_module(sandbox, k, "dup", "0.9")

    write_module(sandbox.source_tree, "dup", "1.0")
    res = sandbox.dkms("install", "dup/1.0", "-k", k, check=True)
    assert f"Found pre-existing {intree}, archiving for uninstallation\n" in res.stdout
    assert not intree.exists()
    backup = sandbox.dkms_tree / f"dup/original_module/{k}/x86_64"
    assert (backup / f"{intree.name}.origin").read_text() == f"{intree}\n"
    assert sandbox.dkms("status").stdout == f"dup/1.0, {k}, x86_64: installed (Original modules exist)\n"

    res = sandbox.dkms("uninstall", "dup/1.0", "-k", k, check=True)
    assert f"Restoring archived original module {intree}\n" in res.stdout
    assert intree.is_file()
    assert not (sandbox.dkms_tree / "dup/original_module").exists()


def test_version_sanity_refuses_older_module(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    intree = plant_intree_module(sandbox, k, "olderm", "2.0")
    write_module(sandbox.source_tree, "olderm", "1.0")
    res = sandbox.dkms("install", "olderm/1.0", "-k", k)
    assert res.returncode == 6
    assert (f"Error! Module version 1.0 for olderm.ko{kconfig_compression(k) if intree.suffix != '.ko' else ''}\n"
            f"is not newer than what is already found in kernel {k} (2.0).\n") in res.stderr
    assert "Error! Installation aborted." in res.stderr
    assert intree.is_file()
    res = sandbox.dkms("install", "olderm/1.0", "-k", k, "--force", check=True)
    assert not intree.exists()


def test_autoinstall_summary_and_exit_11(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "good")
    write_module(sandbox.source_tree, "bad", extra_c="#error deliberately broken")
    manual = write_module(sandbox.source_tree, "manual")
    (manual / "dkms.conf").write_text((manual / "dkms.conf").read_text().replace('AUTOINSTALL="yes"', ""))
    for m in ("good", "bad", "manual"):
        sandbox.dkms("add", f"{m}/1.0", check=True)
    res = sandbox.dkms("autoinstall", "-k", k)
    assert res.returncode == 11
    assert f"Autoinstall of module bad/1.0 for kernel {k} (x86_64)" in res.stdout
    assert f"Autoinstall on {k} succeeded for module(s) good.\n" in res.stdout
    assert f"Autoinstall on {k} failed for module(s) bad(10).\n" in res.stdout
    assert res.stderr.endswith("Error! One or more modules failed to install during autoinstall.\n"
                               "Refer to previous errors for more information.\n")
    status = sandbox.dkms("status").stdout
    assert f"good/1.0, {k}, x86_64: installed\n" in status
    assert "manual/1.0: added\n" in status and "bad/1.0: added\n" in status
    (sandbox.etc / "no-autoinstall").touch()
    res = sandbox.dkms("autoinstall", "-k", k, check=True)
    assert res.stdout == "Automatic installation of modules has been disabled.\n"


def test_autoinstall_follows_build_depends(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    base = write_module(sandbox.source_tree, "zbase")
    dep = write_module(sandbox.source_tree, "adep")
    (dep / "dkms.conf").write_text((dep / "dkms.conf").read_text() + 'BUILD_DEPENDS[0]="zbase"\n')
    assert base.is_dir()
    for m in ("adep", "zbase"):
        sandbox.dkms("add", f"{m}/1.0", check=True)
    res = sandbox.dkms("autoinstall", "-k", k, check=True)
    order = [line for line in res.stdout.splitlines() if line.startswith("Autoinstall of module")]
    assert order == [f"Autoinstall of module zbase/1.0 for kernel {k} (x86_64)",
                     f"Autoinstall of module adep/1.0 for kernel {k} (x86_64)"]
    assert f"Autoinstall on {k} succeeded for module(s) zbase adep.\n" in res.stdout


