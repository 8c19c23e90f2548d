"""Bad input: upstream's exit code and message, and the trees exactly as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLE, Sandbox
from modsrc import write_module


def test_version_and_help(sandbox: Sandbox) -> None:
    assert sandbox.dkms("--version").stdout == "dkms-3.4.3\n"
    res = sandbox.dkms("--help")
    assert res.returncode == 0 and res.stdout.startswith("Usage: ")


def test_the_quick_exit_keeps_output_exit_code_and_exit_handlers(sandbox: Sandbox) -> None:
    # the command skips the interpreter's teardown: nothing written may be lost on the way
    res = sandbox.dkms("--help", env={"DKMS_HOOKS_REPORT_RSS": "1"})
    assert res.returncode == 0
    assert res.stdout.startswith("Usage: ") and res.stdout.endswith("\n")
    assert "dkms-hooks peak RSS:" in res.stderr  # an atexit handler
    piped = sandbox.dkms("add", "build")
    assert piped.returncode == 4 and piped.stderr.endswith("more than one action.\n")


def test_unknown_option_exits_2_with_usage(sandbox: Sandbox) -> None:
    res = sandbox.dkms("status", "-j4")
    assert res.returncode == 2
    assert res.stderr == "\nError! Unknown option: -j4\n"
    assert res.stdout.startswith("Usage: ")


def test_no_action_is_reported_but_exits_0(sandbox: Sandbox) -> None:
    res = sandbox.dkms()
    assert res.returncode == 0
    assert res.stderr == '\nError! Unknown action specified: ""\n'


def test_two_actions(sandbox: Sandbox) -> None:
    res = sandbox.dkms("add", "build")
    assert (res.returncode, res.stderr) == (4, "\nError! Cannot specify more than one action.\n")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["build", "-k", "1.0", "--all", "-m", "x/1"], 2,
         "\nError! You cannot specify a kernel version and also specify\n--all on the command line.\n"),
        (["build", "-a", "x86_64", "--all", "-m", "x/1"], 3,
         "\nError! You cannot specify an arch and also specify\n--all on the command line.\n"),
        (["build", "-k", "1", "-k", "2", "-k", "3", "-a", "a", "-a", "b", "-m", "x/1"], 1,
         "\nError! If more than one arch is specified on the command line, then there\n"
         "must be an equal number of kernel versions also specified (1:1 relationship).\n"),
        (["mktarball", "--binaries-only", "--source-only"], 8,
         "\nError! You have specified both --binaries-only and --source-only.\nYou cannot do this.\n"),
        (["build", "--all", "-m", "x/1"], 5, "\nError! The action build does not support the --all parameter.\n"),
        (["autoinstall", "-k", "1", "-k", "2"], 4,
         "\nError! The action autoinstall does not support multiple kernel version parameters on the command "
         "line.\n"),
        (["kernel_postinst"], 4,
         "\nError! The action kernel_postinst requires exactly one kernel version parameter on the command "
         "line.\n"),
        (["remove", "-m", "nothere", "-v", "1.0", "--all"], 3,
         "\nError! The module/version combo: nothere/1.0 is not located in the DKMS tree.\n"),
        (["build"], 1,
         "\nError! Arguments <module> and <module-version> are not specified.\n"
         "Usage: build <module>/<module-version> or\n"
         "       build -m <module>/<module-version> or\n"
         "       build -m <module> -v <module-version>\n"),
        (["add", "-m", "nosource", "-v", "1.0"], 2, None),
    ],
)
def test_bad_input_leaves_trees_alone(sandbox: Sandbox, args: list[str], code: int, message: str | None) -> None:
    before = sandbox.snapshot()
    res = sandbox.dkms(*args)
    assert res.returncode == code, res.output
    if message is not None:
        assert res.stderr == message
    else:
        assert res.stderr == (f"\nError! Could not find module source directory.\n"
                              f"Directory: {sandbox.source_tree}/nosource-1.0 does not exist.\n")
    assert sandbox.snapshot() == before


def test_add_twice_and_add_by_path(sandbox: Sandbox, tmp_path: Path) -> None:
    res = sandbox.dkms("add", str(EXAMPLE / "dkms.conf"), check=True)
    assert res.stdout.startswith("Creating symlink ")
    assert (sandbox.source_tree / "dkms_hooks_example-1.0/dkms_hooks_example.c").is_file()
    before = sandbox.snapshot()
    res = sandbox.dkms("add", str(EXAMPLE))
    assert res.returncode == 3
    assert res.stderr == ("\nError! DKMS tree already contains: dkms_hooks_example/1.0\n"
                          "You cannot add the same module/version combo more than once.\n")
    assert sandbox.snapshot() == before


def test_directory_without_conf_is_not_a_source_tree(sandbox: Sandbox, tmp_path: Path) -> None:
    empty = tmp_path / "noconf"
    empty.mkdir()
    res = sandbox.dkms("add", str(empty))
    assert res.returncode == 1
    assert "Arguments <module> and <module-version> are not specified." in res.stderr


def test_invalid_conf_is_exit_8_and_nothing_copied(sandbox: Sandbox, tmp_path: Path) -> None:
    src = write_module(tmp_path, "bad", conf="PACKAGE_NAME=bad\n")
    before = sandbox.snapshot()
    res = sandbox.dkms("add", str(src))
    assert res.returncode == 8
    assert res.stderr == ("dkms.conf: Error! No 'PACKAGE_VERSION' directive specified.\n\n"
                          "Error! Bad conf file.\n"
                          f"File: {src}/dkms.conf does not represent a valid dkms.conf file.\n")
    assert sandbox.snapshot() == before


def test_broken_module(sandbox: Sandbox) -> None:
    sandbox.add_source(EXAMPLE)
    sandbox.dkms("add", "dkms_hooks_example/1.0", check=True)
    (sandbox.dkms_tree / "dkms_hooks_example/1.0/source").unlink()
    (sandbox.dkms_tree / "dkms_hooks_example/1.0/source").symlink_to("/nonexistent")
    res = sandbox.dkms("status")
    assert res.stdout == "dkms_hooks_example/1.0: broken\n"
    assert res.stderr == ("\nError! dkms_hooks_example/1.0: Missing the module source directory or the symbolic "
                          "link pointing to it.\nManual intervention is required!\n")
    res = sandbox.dkms("build", "dkms_hooks_example/1.0", "-k", "6.1.0-1-amd64")
    assert res.returncode == 4
    assert res.stderr.startswith("\nError! dkms_hooks_example/1.0 is broken!\n")


def test_missing_os_release(sandbox: Sandbox) -> None:
    (sandbox.root / "etc/os-release").unlink()
    res = sandbox.dkms("status")
    assert (res.returncode, res.stderr) == (4, "\nError! System is missing os-release file.\n")


def test_quiet_silences_everything(sandbox: Sandbox) -> None:
    res = sandbox.dkms("-q", "remove", "-m", "x", "-v", "1", "--all")
    assert (res.returncode, res.output) == (3, "")


def test_conf_command_effective_and_json(sandbox: Sandbox) -> None:
    import json

    res = sandbox.dkms("conf", "-k", "6.1.0-1-amd64", str(EXAMPLE), check=True)
    assert "PACKAGE_NAME=dkms_hooks_example\n" in res.stdout
    assert "module[0]=dkms_hooks_example.ko -> /updates/dkms/dkms_hooks_example.ko\n" in res.stdout
    data = json.loads(sandbox.dkms("conf", "--json", "-k", "6.1.0-1-amd64", str(EXAMPLE), check=True).stdout)
    assert data["valid"] is True and data["modules"][0]["dest"] == "/updates/dkms/dkms_hooks_example.ko"
    raw = sandbox.dkms("conf", "--raw", str(EXAMPLE / "dkms.conf"), check=True).stdout
    assert raw.splitlines()[0] == "AUTOINSTALL[0]=yes"


def test_conf_command_reports_errors(sandbox: Sandbox, tmp_path: Path) -> None:
    src = write_module(tmp_path, "bad", conf='PACKAGE_NAME=bad\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION="/x"\n')
    res = sandbox.dkms("conf", str(src))
    assert res.returncode == 8
    assert "dkms.conf: Error! Directive 'DEST_MODULE_LOCATION' does not begin with" in res.stderr
