"""Crash safety: every verb killed (SIGKILL) at every one of its step boundaries, then
``dkms status`` must be true to the files on disk, no module half-written or missing, the
kernel's own copy of the module intact, and the same command must succeed when repeated.

The step list comes from the code (dkms_hooks.ops.journal.STEPS); a traced run of each verb
checks that the list is exactly the boundaries the verb passes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import KERNELS, Sandbox, make_sandbox, needs_kernel
from modsrc import write_module
from test_lifecycle import plant_intree_module

from dkms_hooks.ops import journal

pytestmark = [pytest.mark.kernel, needs_kernel]

MOD = "crashmod"
ARCH = "x86_64"
#: names of the temporary files and directories the verbs use on their way
LEFTOVERS = (".dkms-new", ".dkms-old", ".dkms-del", ".loading", ".tmp_", ".new", ".dkms-restore")


def _kver() -> str:
    return KERNELS[0] if KERNELS else ""


@dataclass(frozen=True)
class Verb:
    argv: tuple[str, ...]
    start: str  # the template state it starts from
    end: str  # the state it leaves


def _verbs(k: str, archive: str) -> dict[str, Verb]:
    mv = f"{MOD}/1.0"
    return {
        "build": Verb(("build", mv, "-k", k), "added", "built"),
        "install": Verb(("install", mv, "-k", k), "built", "installed"),
        "uninstall": Verb(("uninstall", mv, "-k", k), "installed", "built"),
        "unbuild": Verb(("unbuild", mv, "-k", k), "installed", "added"),
        "remove": Verb(("remove", mv, "-k", k), "installed", "absent"),
        "autoinstall": Verb(("autoinstall", "-k", k), "added", "installed"),
        "ldtarball": Verb(("ldtarball", archive), "bare", "built"),
    }


@dataclass
class World:
    """Template trees, one per starting state, restored into one fixed root per case (the
    trees hold absolute symlinks, so a copy must live where the original did)."""

    base: Path
    sandbox: Sandbox
    intree: Path
    intree_bytes: bytes
    archive: Path

    def restore(self, state: str) -> Sandbox:
        shutil.rmtree(self.sandbox.root, ignore_errors=True)
        shutil.copytree(self.base / "templates" / state, self.sandbox.root, symlinks=True)
        return self.sandbox

    def verbs(self) -> dict[str, Verb]:
        return _verbs(_kver(), str(self.archive))


def _snapshot(world_base: Path, sb: Sandbox, state: str) -> None:
    dest = world_base / "templates" / state
    shutil.copytree(sb.root, dest, symlinks=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("journal")
    sb = make_sandbox(base)
    k = _kver()
    sb.add_kernel(k)
    intree = plant_intree_module(sb, k, MOD, "0.9")
    write_module(sb.source_tree, MOD, "1.0")
    sb.dkms("add", f"{MOD}/1.0", check=True)
    _snapshot(base, sb, "added")
    sb.dkms("build", f"{MOD}/1.0", "-k", k, check=True)
    _snapshot(base, sb, "built")
    archive = base / f"{MOD}-1.0.dkms.tar.gz"
    sb.dkms("mktarball", f"{MOD}/1.0", "-k", k, f"--archive={archive}", check=True)
    sb.dkms("install", f"{MOD}/1.0", "-k", k, check=True)
    _snapshot(base, sb, "installed")
    sb.dkms("remove", f"{MOD}/1.0", "--all", check=True)
    shutil.rmtree(sb.source_tree / f"{MOD}-1.0")
    _snapshot(base, sb, "bare")
    return World(base, sb, intree, intree.read_bytes(), archive)


def _modinfo(path: Path, field: str) -> str:
    res = subprocess.run(["modinfo", "-F", field, str(path)], check=False, capture_output=True, text=True)
    assert res.returncode == 0, f"{path} is not a valid module: {res.stderr}"
    return res.stdout.strip()


def _state_on_disk(sb: Sandbox, k: str) -> str:
    """What the files say, independently of dkms' own code."""
    vdir = sb.dkms_tree / MOD / "1.0"
    if not vdir.is_dir():
        return "absent"
    source = vdir / "source"
    if not source.is_symlink():
        return "broken" if (sb.source_tree / f"{MOD}-1.0").is_dir() else "absent"
    kos = list((vdir / k / ARCH / "module").glob(f"{MOD}.ko*"))
    if not kos:
        return "added"
    link = sb.dkms_tree / MOD / f"kernel-{k}-{ARCH}"
    if link.is_symlink() and os.readlink(link) == f"1.0/{k}/{ARCH}":
        return "installed"
    return "built"


def check_true_to_disk(world: World, sb: Sandbox) -> str:
    """Run status (which recovers first) and check it against the files; returns the state."""
    k = _kver()
    res = sb.dkms("status")
    assert res.returncode == 0, res.output
    state = _state_on_disk(sb, k)
    expected = {"absent": "", "added": f"{MOD}/1.0: added\n", "broken": f"{MOD}/1.0: broken\n"}.get(state)
    if expected is None:
        original = " (Original modules exist)" if state == "installed" else ""
        expected = f"{MOD}/1.0, {k}, {ARCH}: {state}{original}\n"
    assert res.stdout == expected, res.output
    assert state != "broken"

    # no step's temporary file or directory is left, and the journal is empty
    for dirpath, dirs, files in os.walk(sb.root):
        for name in dirs + files:
            assert not any(marker in name for marker in LEFTOVERS), Path(dirpath, name)
    journal_dir = sb.dkms_tree / ".dkms-hooks/journal"
    assert not journal_dir.is_dir() or not os.listdir(journal_dir)
    build_dir = sb.dkms_tree / MOD / "1.0/build"
    assert not build_dir.is_dir() or not os.listdir(build_dir)

    # every module file anywhere is whole
    for top in (sb.dkms_tree, sb.install_tree / k):
        for ko in top.rglob("*.ko*"):
            if ko.is_file() and not ko.name.endswith((".origin",)):
                assert _modinfo(ko, "vermagic").split()[0] == k, ko

    installed = list((sb.install_tree / k / "updates/dkms").glob(f"{MOD}.ko*"))
    backup = sb.dkms_tree / MOD / "original_module" / k / ARCH
    dep = sb.install_tree / k / "modules.dep"
    listed = dep.is_file() and f"updates/dkms/{MOD}.ko" in dep.read_text()
    if state == "installed":
        built = next((sb.dkms_tree / MOD / "1.0" / k / ARCH / "module").glob(f"{MOD}.ko*"))
        assert [p.read_bytes() for p in installed] == [built.read_bytes()]
        assert listed
        # the kernel's own module is kept aside, whole, with where it came from
        assert not world.intree.exists()
        assert (backup / world.intree.name).read_bytes() == world.intree_bytes
        assert (backup / f"{world.intree.name}.origin").read_text() == f"{world.intree}\n"
    else:
        assert installed == [] and not listed
        assert world.intree.read_bytes() == world.intree_bytes
        assert not (sb.dkms_tree / MOD / "original_module").exists()
    return state


#: a verb that recovery finished is, when repeated, answered as upstream answers it
ALREADY_DONE = {
    "remove": (3, f"The module/version combo: {MOD}/1.0 is not located in the DKMS tree."),
    "ldtarball": (8, f"{MOD}/1.0 is already added!"),
}

CASES = [(verb, step) for verb, steps in journal.STEPS.items() for step in steps]


def test_every_verb_has_steps() -> None:
    assert set(journal.STEPS) == {"build", "install", "uninstall", "unbuild", "remove", "autoinstall", "ldtarball"}
    assert all(journal.STEPS.values())


@pytest.mark.parametrize("verb", sorted(journal.STEPS))
def test_steps_listed_are_the_steps_passed(world: World, verb: str, tmp_path: Path) -> None:
    v = world.verbs()[verb]
    sb = world.restore(v.start)
    log = tmp_path / "steps.log"
    res = sb.dkms(*v.argv, env={"DKMS_HOOKS_STEP_LOG": str(log)})
    assert res.returncode == 0, res.output
    passed = log.read_text().split()
    assert set(passed) == set(journal.STEPS[verb])
    assert check_true_to_disk(world, sb) == v.end


@pytest.mark.parametrize(("verb", "step"), CASES, ids=[f"{v}@{s}" for v, s in CASES])
def test_killed_at_step(world: World, verb: str, step: str) -> None:
    v = world.verbs()[verb]
    sb = world.restore(v.start)
    res = sb.dkms(*v.argv, env={"DKMS_HOOKS_CRASH_AT": step})
    assert res.returncode == -signal.SIGKILL, res.output
    journal_dir = sb.dkms_tree / ".dkms-hooks/journal"
    assert journal_dir.is_dir() and os.listdir(journal_dir)  # the record the next run recovers from

    state = check_true_to_disk(world, sb)
    assert state in (v.start, v.end, "added", "built", "absent")

    res = sb.dkms(*v.argv)
    if state == v.end and verb in ALREADY_DONE:
        # recovery finished the work; upstream answers a repeated remove or ldtarball so
        code, message = ALREADY_DONE[verb]
        assert res.returncode == code and message in res.stderr, res.output
    else:
        assert res.returncode == 0, res.output
    assert check_true_to_disk(world, sb) == v.end


@pytest.mark.parametrize("step", ["install.linked", "install.depmod-done"])
def test_event_killed_before_its_batched_depmod(world: World, step: str) -> None:
    """An event runs depmod once at the end of its transaction: a kill before that still
    gets the depmod, from the next run."""
    k = _kver()
    sb = world.restore("added")
    res = sb.event("kernel-install", "add", k, "/boot/x", "/boot/vmlinuz", env={"DKMS_HOOKS_CRASH_AT": step})
    assert res.returncode == -signal.SIGKILL, res.output
    assert check_true_to_disk(world, sb) == "installed"  # modules.dep lists it


def test_kernel_hook_killed_before_its_single_depmod(world: World) -> None:
    k = _kver()
    sb = world.restore("installed")
    res = sb.dkms("kernel_prerm", "-k", k, env={"DKMS_HOOKS_CRASH_AT": "unbuild.moved-aside"})
    assert res.returncode == -signal.SIGKILL, res.output
    assert check_true_to_disk(world, sb) == "added"  # modules.dep no longer lists it
    assert not list(sb.dkms_tree.glob("depmod-pending-*"))
