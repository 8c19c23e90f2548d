"""``dkms status --json`` on real builds: the entries of the text, with module files, the
signer modinfo reads, the last build result and its log; the text itself unchanged; served
from the status cache without bash or modinfo."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import EXAMPLE, KERNELS, Sandbox, needs_kernel
from modsrc import write_module


def _doc(sandbox: Sandbox, *args: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    res = sandbox.dkms("status", "--json", *args, env=env)
    assert res.returncode == 0, res.output
    doc = json.loads(res.stdout)
    assert (doc["schema"], doc["version"]) == ("dkms-hooks/status", 1)
    return doc  # type: ignore[no-any-return]


def test_json_only_on_read_only_verbs(sandbox: Sandbox) -> None:
    res = sandbox.dkms("remove", "--json", "x/1.0", "--all")
    assert (res.returncode, res.stderr) == (2, "\nError! The action remove does not support --json.\n")
    res = sandbox.dkms("build", "--build", "x/1.0")
    assert res.returncode == 2
    # an empty tree, and --json in any position, as upstream's options go
    assert json.loads(sandbox.dkms("--json", "status").stdout)["entries"] == []


def test_added_and_broken(sandbox: Sandbox) -> None:
    write_module(sandbox.source_tree, "plain")
    sandbox.dkms("add", "plain/1.0", check=True)
    write_module(sandbox.source_tree, "gone")
    sandbox.dkms("add", "gone/1.0", check=True)
    subprocess.run(["rm", "-r", str(sandbox.source_tree / "gone-1.0")], check=True)
    text = sandbox.dkms("status")
    assert text.stdout == "gone/1.0: broken\nplain/1.0: added\n"
    doc = _doc(sandbox)
    assert [(e["module"], e["state"], e["kernel"], e["last_build"]) for e in doc["entries"]] == [
        ("gone", "broken", None, {"result": "none"}), ("plain", "added", None, {"result": "none"})]
    # the error upstream prints for a broken module is the state here: stdout is JSON alone
    assert sandbox.dkms("status", "--json").stderr == ""


@pytest.mark.kernel
@needs_kernel
def test_installed_module_signer_paths_and_last_build(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("install", "dkms_hooks_example/1.0", "-k", k, check=True)
    line = f"dkms_hooks_example/1.0, {k}, x86_64: installed\n"
    assert sandbox.dkms("status").stdout == line
    (entry,) = _doc(sandbox)["entries"]
    assert {key: entry[key] for key in ("module", "version", "kernel", "arch", "state", "warnings")} == {
        "module": "dkms_hooks_example", "version": "1.0", "kernel": k, "arch": "x86_64", "state": "installed",
        "warnings": []}
    (mod,) = entry["modules"]
    installed = sandbox.install_tree / k / "updates/dkms"
    assert mod["installed"] == str(next(installed.glob("dkms_hooks_example.ko*")))
    assert mod["built"].startswith(str(sandbox.dkms_tree / f"dkms_hooks_example/1.0/{k}/x86_64/module/"))
    real = subprocess.run(["modinfo", "-F", "signer", mod["installed"]], capture_output=True, text=True).stdout.strip()
    assert real and mod["signer"] == entry["signer"] == real
    last = entry["last_build"]
    assert (last["result"], last["exit"], last["kernel"]) == ("ok", 0, k)
    assert entry["log"] == str(sandbox.dkms_tree / f"dkms_hooks_example/1.0/{k}/x86_64/log/make.log")

    # a second run needs neither bash (dkms.conf) nor modinfo (signer): both are cached
    fake = sandbox.root / "fakebin"
    fake.mkdir()
    for tool in ("bash", "modinfo"):
        (fake / tool).write_text("#!/bin/sh\nexit 99\n")
        (fake / tool).chmod(0o755)
    blind = {"PATH": f"{fake}:{sandbox.env['PATH']}"}
    assert _doc(sandbox, env=blind)["entries"] == [entry]
    assert sandbox.dkms("status", env=blind).stdout == line

    # upstream's warnings, as names: the installed copy differs from the built one
    target = next(installed.glob("dkms_hooks_example.ko*"))
    target.write_bytes(target.read_bytes() + b"\0")
    assert sandbox.dkms("status").stdout == line.replace(
        "installed\n", "installed (Differences between built and installed modules)\n")
    (entry,) = _doc(sandbox)["entries"]
    assert entry["warnings"] == ["built-differs-from-installed"]


@pytest.mark.kernel
@needs_kernel
def test_a_failed_build_is_recorded_with_its_log(sandbox: Sandbox) -> None:
    k = KERNELS[0]
    sandbox.add_kernel(k)
    write_module(sandbox.source_tree, "bad", extra_c="#error broken on purpose")
    sandbox.dkms("add", "bad/1.0", check=True)
    assert sandbox.dkms("build", "bad/1.0", "-k", k).returncode == 10
    assert sandbox.dkms("status").stdout == "bad/1.0: added\n"
    (entry,) = _doc(sandbox, "-k", k)["entries"]
    last = entry["last_build"]
    assert (entry["state"], last["result"], last["exit"], last["kernel"]) == ("added", "failed", 10, k)
    assert last["message"] == f"Bad return status for module build on kernel: {k} (x86_64)"
    kept = sandbox.dkms_tree / f".dkms-hooks/failed/bad/1.0/{k}-x86_64.make.log"
    assert entry["log"] == last["log"] == str(kept)
    assert "#error broken on purpose" in kept.read_text()
    # another kernel has no record
    (other,) = _doc(sandbox, "-k", "9.9.9-1-amd64")["entries"]
    assert other["last_build"] == {"result": "none"} and other["log"] is None
    # remove takes the records and logs with it
    sandbox.dkms("remove", "bad/1.0", "--all", check=True)
    assert not (sandbox.dkms_tree / ".dkms-hooks/builds/bad").exists()
    assert not (sandbox.dkms_tree / ".dkms-hooks/failed/bad").exists()
