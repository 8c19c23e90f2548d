"""Unprivileged builds (build_user in dkms-hooks.toml) with a real throwaway system user,
created inside the overlay so it never exists on the host."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest
from conftest import KERNELS, needs_kernel
from modsrc import write_module

from system.overlay_helpers import in_overlay, needs_overlay

USER = "dkms-hooks-build"


@pytest.mark.kernel
@needs_kernel
@needs_overlay
def test_make_and_build_scripts_run_as_the_build_user_install_as_root(tmp_path: Path) -> None:
    k = KERNELS[0]
    conf = ('PACKAGE_NAME="whoami"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="whoami"\n'
            'DEST_MODULE_LOCATION[0]="/updates"\nPRE_BUILD="prebuild.sh"\nPOST_BUILD="postbuild.sh"\n')
    src = write_module(tmp_path / "src", "whoami", conf=conf)
    (src / "Makefile").write_text("obj-m := whoami.o\n$(info MAKE_USER=$(shell id -un))\n")
    for step in ("prebuild", "postbuild"):
        script = src / f"{step}.sh"
        script.write_text(f"#!/bin/sh\necho {step.upper()}_USER=$(id -un)\n")
        script.chmod(0o755)
    for n in ("userprobe_a", "userprobe_b", "userprobe_c"):
        write_module(tmp_path / "src", n)
    res = in_overlay(f"""
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {USER}
mkdir -p /etc/dkms
printf 'build_user = "{USER}"\\n' > /etc/dkms/dkms-hooks.toml
cp -a {src} /usr/src/
dkms install whoami/1.0 -k {k} >/dev/null
echo "== log"
cat /var/lib/dkms/whoami/1.0/{k}/*/log/make.log
echo "== owners"
stat -c '%U %n' /var/lib/dkms/whoami/1.0/{k}/*/module/whoami.ko* /lib/modules/{k}/updates/dkms/whoami.ko*
# several builds for a kernel: the build user's makes share the compiler probe answers
for n in userprobe_a userprobe_b userprobe_c; do cp -a {tmp_path}/src/$n-1.0 /usr/src/; dkms add $n/1.0 >/dev/null; done
touch /tmp/probes.log && chmod 666 /tmp/probes.log
DKMS_HOOKS_PROBE_LOG=/tmp/probes.log dkms autoinstall -k {k} >/dev/null
echo "== probes"
grep -c '^hit' /tmp/probes.log
stat -c '%U' /lib/modules/{k}/updates/dkms/userprobe_*.ko*
# the same build again comes from the build cache: root copies the entry into its own staging
dkms remove whoami/1.0 --all >/dev/null
dkms add whoami/1.0 >/dev/null
dkms install whoami/1.0 -k {k} >/dev/null
echo "== again"
python3 -c 'import glob, json; print(json.load(open(glob.glob("/var/lib/dkms/.dkms-hooks/builds/whoami/1.0/*.json")[0]))["source"])'
stat -c '%U' /lib/modules/{k}/updates/dkms/whoami.ko*
""", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    log = res.stdout.split("== log\n")[1].split("== owners\n")[0]
    owners = res.stdout.split("== owners\n")[1].split("== probes\n")[0].splitlines()
    hits, *probe_owners = res.stdout.split("== probes\n")[1].split("== again\n")[0].splitlines()
    assert res.stdout.split("== again\n")[1].splitlines() == ["cache", "root"], res.stdout
    assert int(hits) > 0 and probe_owners == ["root"] * 3, res.stdout
    for step in ("MAKE", "PREBUILD", "POSTBUILD"):
        assert f"{step}_USER={USER}\n" in log, log
    assert "_USER=root" not in log
    assert len(owners) == 2 and all(line.startswith("root ") for line in owners), owners
    with pytest.raises(KeyError):
        pwd.getpwnam(USER)  # the user lived in the overlay only
