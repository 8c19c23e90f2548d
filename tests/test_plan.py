"""``dkms plan``: the verdict per module for a kernel without building or writing anything;
``--build`` builds for real in a scratch tree and leaves the real trees as they were."""

from __future__ import annotations

import json
import os

import pytest
from conftest import KERNELS, Sandbox, needs_kernel
from modsrc import write_module

NO_HEADERS = "9.9.9-1-amd64"


def _conf(name: str, extra: str = "", autoinstall: bool = True) -> str:
    return (f'PACKAGE_NAME="{name}"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="{name}"\n'
            f'DEST_MODULE_LOCATION[0]="/updates"\n' + ('AUTOINSTALL="yes"\n' if autoinstall else "") + extra)


def _plan(sandbox: Sandbox, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    res = sandbox.dkms("plan", "--json", *args)
    doc = json.loads(res.stdout)
    assert (doc["schema"], doc["version"], doc["exit"]) == ("dkms-hooks/plan", 1, res.returncode)
    return res.returncode, doc


def _verdicts(doc: dict) -> dict[tuple[str, str], tuple[str, list[str]]]:  # type: ignore[type-arg]
    return {(e["module"], e["kernel"]): (e["verdict"], [r["code"] for r in e["reasons"]]) for e in doc["entries"]}


def test_a_kernel_without_headers_writes_nothing(sandbox: Sandbox) -> None:
    write_module(sandbox.source_tree, "plain")
    write_module(sandbox.source_tree, "old", conf=_conf("old", 'BUILD_EXCLUSIVE_KERNEL_MAX="5.10"\n'))
    write_module(sandbox.source_tree, "manual", conf=_conf("manual", autoinstall=False))
    write_module(sandbox.source_tree, "needy", conf=_conf("needy", 'BUILD_DEPENDS[0]="elsewhere"\n'))
    for m in ("plain", "old", "manual", "needy"):
        sandbox.dkms("add", f"{m}/1.0", check=True)
    before = sandbox.snapshot()
    code, doc = _plan(sandbox, "-k", NO_HEADERS)
    assert code == 1
    assert doc["kernels"] == [{"kernel": NO_HEADERS, "arch": "x86_64", "headers": None,
                               "headers_package": f"linux-headers-{NO_HEADERS}",
                               "signing": {"certificate": str(sandbox.dkms_tree / "mok.pub"), "present": False,
                                           "unsigned": None, "trust": None, "loads": None}}]
    assert _verdicts(doc) == {
        ("manual", NO_HEADERS): ("blocked", ["no-headers"]),
        ("needy", NO_HEADERS): ("blocked", ["no-headers"]),
        ("old", NO_HEADERS): ("skip", ["build-exclusive"]),
        ("plain", NO_HEADERS): ("blocked", ["no-headers"]),
    }
    by = {e["module"]: e for e in doc["entries"]}
    assert by["plain"]["reasons"][0]["package"] == f"linux-headers-{NO_HEADERS}"
    assert not by["manual"]["required"] and by["plain"]["required"]
    res = sandbox.dkms("plan", "-k", NO_HEADERS, "-m", "old")
    assert res.returncode == 0
    assert res.stdout == (
        f"Plan for kernel {NO_HEADERS} (x86_64), no headers (install linux-headers-{NO_HEADERS}):\n"
        '  skip        old/1.0: BUILD_EXCLUSIVE_KERNEL_MAX="5.10" does not match this kernel\n')
    res = sandbox.dkms("plan", "-k", NO_HEADERS, "manual/1.0")
    assert res.returncode == 1 and "  blocked     manual/1.0: no headers at " in res.stdout
    assert sandbox.snapshot() == before


@pytest.mark.kernel
@needs_kernel
def test_real_kernels_known_failures_dependencies_and_scratch_builds(sandbox: Sandbox) -> None:
    assert len(KERNELS) >= 2
    k0, k1 = KERNELS[:2]
    for k in (k0, k1):
        sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "base")
    write_module(sandbox.source_tree, "top", conf=_conf("top", 'BUILD_DEPENDS[0]="base"\n'))
    write_module(sandbox.source_tree, "bad", extra_c="#error broken on purpose")
    write_module(sandbox.source_tree, "needy", conf=_conf("needy", 'BUILD_DEPENDS[0]="elsewhere"\n'))
    for m in ("base", "top", "bad", "needy"):
        sandbox.dkms("add", f"{m}/1.0", check=True)
    sandbox.dkms("install", "base/1.0", "-k", k0, check=True)
    assert sandbox.dkms("build", "bad/1.0", "-k", k0).returncode == 10

    before = sandbox.snapshot()
    code, doc = _plan(sandbox, "-k", k0, "-k", k1, "-k", NO_HEADERS)
    assert code == 1
    v = _verdicts(doc)
    assert v[("base", k0)] == ("installed", [])
    assert v[("top", k0)] == ("would-build", [])
    assert v[("bad", k0)] == ("blocked", ["known-failing"])
    assert v[("base", k1)] == v[("top", k1)] == v[("bad", k1)] == ("would-build", [])
    assert v[("top", NO_HEADERS)] == ("blocked", ["no-headers"])
    assert v[("needy", k1)] == ("blocked", ["dependency-missing"])
    known = next(e for e in doc["entries"] if (e["module"], e["kernel"]) == ("bad", k0))["reasons"][0]
    assert known["log"] == str(sandbox.dkms_tree / f".dkms-hooks/failed/bad/1.0/{k0}-x86_64.make.log")
    assert sandbox.snapshot() == before

    # real builds in a scratch tree, in the job budget; the real trees stay as they were
    scratch_parent = sandbox.env["TMPDIR"]
    leftovers = set(os.listdir(scratch_parent))
    code, doc = _plan(sandbox, "-k", k0, "-k", k1, "--build", "-j", "2")
    assert code == 10
    builds = {(e["module"], e["kernel"]): e["build"] for e in doc["entries"]}
    assert builds[("base", k0)] is None  # installed already: nothing to try
    for key in (("top", k0), ("base", k1), ("top", k1), ("bad", k1)):
        assert builds[key] is not None, key
    assert builds[("top", k0)]["result"] == builds[("base", k1)]["result"] == builds[("top", k1)]["result"] == "ok"
    for k in (k0, k1):
        failed = builds[("bad", k)]
        assert (failed["result"], failed["exit"]) == ("failed", 10)
        assert any("#error broken on purpose" in line for line in failed["log_tail"])
    assert sandbox.snapshot() == before
    assert set(os.listdir(scratch_parent)) == leftovers

    # the text form of the same, with only the module that builds
    res = sandbox.dkms("plan", "-k", k1, "-m", "top", "--build")
    assert res.returncode == 0, res.output
    assert f"==> scratch build of top/1.0 for kernel {k1} (x86_64)\n" in res.stdout
    assert "\n  would-build top/1.0\n    scratch build: ok (" in res.stdout
    assert sandbox.snapshot() == before
