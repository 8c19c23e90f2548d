"""Property-based tests (hypothesis) over option strings and dkms.conf values: whatever comes
in, no traceback, an exit code dkms can give with its message on stderr, and nothing
written outside the sandbox's trees. Nothing here builds a kernel module."""

from __future__ import annotations

import os
import posixpath
import shlex
import string
from pathlib import Path

import pytest
from conftest import EXAMPLE, Sandbox
from hostile import KNOWN_EXIT_CODES, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dkms_hooks.cli import cmdline
from dkms_hooks.model import bashconf, dkmsconf, safety
from dkms_hooks.model.kernel import KernelTarget

# Hostile path material, without the characters that make bash run a command when upstream
# evaluates a dkms.conf value a second time ($ ` " \ ; & | and friends): the tests must not
# run whatever hypothesis happens to spell.
PIECES = ["..", ".", "/", "a", "kernel", "updates", "extra", "x.ko", " ", "\t", "-", "~", "+", "@", "#", ":",
          "é", "1.0", "6.1.0-1-amd64"]
_PIECES = st.sampled_from(PIECES)
VALUE = st.lists(_PIECES, max_size=6).map("".join)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# each example runs dkms once or twice; DKMS_HOOKS_EXAMPLES=200 for a longer hunt
SLOW = settings(max_examples=int(os.environ.get("DKMS_HOOKS_EXAMPLES", "15")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.lists(_PIECES, max_size=10).map("".join))
def test_climbs_out_agrees_with_normalised_paths(relative: str) -> None:
    base = "/base/dir"
    joined = posixpath.normpath(posixpath.join(base, relative.lstrip("/")))
    inside = joined == base or joined.startswith(base + "/")
    assert safety.climbs_out(relative) != inside


@FAST
@given(st.text(max_size=12))
def test_a_good_name_is_one_path_component(name: str) -> None:
    if safety.bad_name(name) is None and name:
        p = Path("/tree") / name
        assert p.parent == Path("/tree") and p.name == name
        assert os.path.normpath(p) == os.fspath(p)


_WORDS = ["-m", "-v", "-k", "-a", "--all", "--force", "-q", "-j", "--directive", "--arch", "--kernelver",
          "--module=", "-k=", "add", "status", "build"]


@FAST
@given(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=8)), max_size=10))
def test_option_parser_never_raises(argv: list[str]) -> None:
    parsed = cmdline.parse(argv)
    assert isinstance(parsed.options.kernels, tuple)


_DIRECTIVES = ("PACKAGE_NAME", "PACKAGE_VERSION", "BUILT_MODULE_NAME", "BUILT_MODULE_LOCATION",
               "DEST_MODULE_NAME", "DEST_MODULE_LOCATION")


@FAST
@given(st.dictionaries(st.sampled_from(_DIRECTIVES), VALUE))
def test_a_valid_conf_keeps_every_path_inside(tmp_path_factory: pytest.TempPathFactory,
                                              values: dict[str, str]) -> None:
    tmp = tmp_path_factory.mktemp("conf")
    result = bashconf.SourceResult(values={n: {0: v} for n, v in values.items()})
    kernel = KernelTarget("6.1.0-1-amd64", "x86_64", tmp / "k", tmp / "k/.config")
    conf = dkmsconf.resolve(result, path=tmp / "dkms.conf", kernel=kernel, running_distribution="fedora",
                            default_build_dir=tmp / "build")
    if not conf.ok:
        assert all(d.stream == "err" for d in conf.diagnostics if "Error!" in d.text)
        return
    tree, build, lib = "/var/lib/dkms", "/var/lib/dkms/m/1/build", "/lib/modules/6.1.0-1-amd64"
    for path, top in [(f"{tree}/{conf.package_name}/{conf.package_version}", tree)] + [
        (f"{build}/{m.built_path}.ko", build) for m in conf.modules
    ] + [(f"{lib}{loc}/{m.dest_name}.ko", lib) for m in conf.modules for loc in m.possible_dest_locations()]:
        assert posixpath.normpath(path).startswith(top + "/"), path


def _outside(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    """Everything the test can see that is not one of the sandbox's trees."""
    trees = [os.fspath(p.relative_to(tmp_path)) for p in (sandbox.dkms_tree, sandbox.source_tree,
                                                            sandbox.install_tree)]
    snap = {k: v for k, v in snapshot(tmp_path).items()
            if not any(k == t or k.startswith(t + "/") for t in trees)}
    # one level up holds only this session's test directories
    snap.update({f"../{name}": "" for name in os.listdir(tmp_path.parent)})
    return snap


def _check(res_code: int, stderr: str, output: str, quiet: bool) -> None:
    assert "Traceback" not in output and "internal error" not in output, output
    assert res_code in KNOWN_EXIT_CODES, output
    if res_code != 0 and not quiet:
        assert stderr.strip(), output


@pytest.fixture
def hostile_sandbox(sandbox: Sandbox, tmp_path: Path) -> Sandbox:
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", "dkms_hooks_example/1.0", check=True)
    (tmp_path / "cwd").mkdir()
    return sandbox


@SLOW
@given(values=st.dictionaries(st.sampled_from(_DIRECTIVES), VALUE, min_size=1))
def test_add_with_hostile_conf_values(hostile_sandbox: Sandbox, tmp_path: Path,
                                      values: dict[str, str]) -> None:
    conf = {"PACKAGE_NAME": "prop", "PACKAGE_VERSION": "1.0", "DEST_MODULE_LOCATION": "/updates", **values}
    src = tmp_path / "cwd" / "src"
    src.mkdir(exist_ok=True)
    (src / "dkms.conf").write_text("".join(f"{k}[0]={shlex.quote(v)}\n" for k, v in conf.items()))
    (src / "prop.c").write_text("")
    before = _outside(hostile_sandbox, tmp_path)
    res = hostile_sandbox.dkms("add", str(src))
    _check(res.returncode, res.stderr, res.output, quiet=False)
    assert _outside(hostile_sandbox, tmp_path) == before
    status = hostile_sandbox.dkms("status")
    assert status.returncode == 0 and "Traceback" not in status.output


_ACTIONS = ["add", "build", "install", "uninstall", "unbuild", "remove", "status", "match", "mktarball",
            "conf", "autoinstall", "kernel_postinst", "kernel_prerm"]
_OPTIONS = ["-m", "-v", "-k", "-a", "--all", "--force", "--force-version-override", "-q", "--verbose", "-j",
            "--no-depmod", "--binaries-only", "--source-only", "--templatekernel", "--directive"]
_NAMES = st.one_of(VALUE, st.sampled_from(["dkms_hooks_example", "1.0", "dkms_hooks_example/1.0", "x86_64"]))


@SLOW
@given(action=st.sampled_from(_ACTIONS),
       words=st.lists(st.one_of(st.sampled_from(_OPTIONS), _NAMES), max_size=7))
def test_hostile_options(hostile_sandbox: Sandbox, tmp_path: Path, action: str, words: list[str]) -> None:
    before = _outside(hostile_sandbox, tmp_path)
    res = hostile_sandbox.dkms(action, *words)
    _check(res.returncode, res.stderr, res.output, quiet="-q" in words)
    assert _outside(hostile_sandbox, tmp_path) == before


def test_value_alphabet_is_inert() -> None:
    """The strategies above never spell a character bash would act on in a value."""
    active = set("$`\"\\;&|()<>!*?[]{}'") | set(string.whitespace) - {" ", "\t"}
    assert not active & set("".join(PIECES))
