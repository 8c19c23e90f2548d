"""Reading plain-assignment dkms.conf files without bash: whatever the reader accepts, it
must answer exactly as readconf.bash does; whatever it cannot be sure of, it leaves to bash."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED

from dkms_hooks.model import bashconf, dkmsconf, staticconf
from dkms_hooks.system import run

CORPUS = SHARED / "corpus" / "dkms-conf"
SCOPE = {
    "kernelver": "6.1.0-56-amd64", "arch": "x86_64", "kernel_source_dir": "/lib/modules/6.1.0-56-amd64/build",
    "dkms_tree": "/var/lib/dkms", "source_tree": "/usr/src", "install_tree": "/lib/modules", "module": "m",
    "module_version": "1.0", "parallel_jobs": "2", "running_distribution": "debian", "addon_modules_dir": "",
    "verbose": "",
}
NAMES = list(dkmsconf.KEPT_NAMES)
DEPRECATED = list(dkmsconf.DEPRECATED)


def both(files: list[Path], scope: dict[str, str] = SCOPE, env: dict[str, str] | None = None,
         ) -> tuple[bashconf.SourceResult | None, bashconf.SourceResult]:
    env = {"PATH": "/usr/bin:/bin"} if env is None else env
    plain = staticconf.read(files, NAMES, scope=scope, deprecated=DEPRECATED, env=env)
    bash = bashconf.source_with_bash(files, NAMES, scope=scope, deprecated=DEPRECATED, env=env)
    if plain is None:
        return None, bash
    values, records = plain
    return bashconf.SourceResult(values, [bashconf.Deprecation(*r) for r in records]), bash


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.conf")) if CORPUS.is_dir() else []


@pytest.mark.skipif(not corpus_files(), reason="corpus not found beside the checkout")
def test_every_accepted_corpus_file_reads_as_bash_reads_it() -> None:
    accepted = 0
    for conf in corpus_files():
        plain, bash = both([conf])
        if plain is not None:
            accepted += 1
            assert plain == bash, conf.name
    # most real files are plain assignments: the fast path has to matter
    assert accepted >= len(corpus_files()) // 2


PLAIN = {
    "quoted and bare": 'PACKAGE_NAME="foo"\nPACKAGE_VERSION=1.2.3\n',
    "references": 'PACKAGE_NAME=foo\nPACKAGE_VERSION="2"\nMAKE[0]="make -C $kernel_source_dir M=${dkms_tree}/$PACKAGE_NAME/build"\n',
    "whitespace runs collapse, ends keep one space": 'PACKAGE_NAME="  a \t  b  "\nPACKAGE_VERSION=" "\n',
    "single quotes are literal, then evaluated again": "PACKAGE_NAME='x y'\nPACKAGE_VERSION='1'\nCLEAN='make clean'\n",
    "arrays, out of order, scalar is index 0": (
        'BUILT_MODULE_NAME[2]=c\nBUILT_MODULE_NAME[0]=a\nBUILT_MODULE_NAME=z\nDEST_MODULE_LOCATION[1]="/extra"\n'
    ),
    "comments and blank lines": '#!/bin/bash\n# a comment\n\n   \nPACKAGE_NAME=foo # trailing\n\t# indented\n',
    "helper variables stay in the file": 'mod=wl\nBUILT_MODULE_NAME[0]="$mod"\nDEST_MODULE_NAME[0]=${mod}x\n',
    "kept names are unset before sourcing": 'PACKAGE_NAME="$STRIP$AUTOINSTALL-x"\n',
    "deprecated directives": 'REMAKE_INITRD=yes\nMODULES_CONF[0]="a"\nMODULES_CONF[3]="b"\n',
    "empty values": 'PACKAGE_NAME=\nPACKAGE_VERSION=""\nSTRIP[0]=\n',
    "concatenated quoting": "PACKAGE_NAME=a\"b c\"'d'$arch\n",
    "punctuation that is inert": 'MAKE="make KVER=$kernelver; echo a|b && c >/dev/null # x {y} ~z ^w"\n',
    "no trailing newline": "PACKAGE_NAME=foo",
}


@pytest.mark.parametrize("text", PLAIN.values(), ids=PLAIN.keys())
def test_plain_files_are_read_without_bash_exactly_as_bash_reads_them(text: str, tmp_path: Path) -> None:
    conf = tmp_path / "dkms.conf"
    conf.write_text(text)
    plain, bash = both([conf])
    assert plain is not None
    assert plain == bash


def test_later_files_see_and_override_earlier_ones(tmp_path: Path) -> None:
    first, second = tmp_path / "dkms.conf", tmp_path / "override.conf"
    first.write_text('PACKAGE_NAME=foo\nBUILT_MODULE_NAME[0]=a\nBUILT_MODULE_NAME[1]=b\nhelper=gone\nCLEAN="x  y"\n')
    # the first file's helper was set in a subshell: bash would look for it in the environment
    second.write_text('PACKAGE_VERSION="<$helper>"\n')
    assert both([first, second])[0] is None
    second.write_text('BUILT_MODULE_NAME[1]="${PACKAGE_NAME}2"\nPACKAGE_VERSION="<$CLEAN>"\n')
    plain, bash = both([first, second])
    assert plain is not None and plain == bash
    assert plain.values["PACKAGE_VERSION"] == {0: "<x y>"}
    assert plain.values["BUILT_MODULE_NAME"] == {0: "a", 1: "foo2"}


def test_scope_values_that_are_kept_names_are_unset(tmp_path: Path) -> None:
    conf = tmp_path / "dkms.conf"
    conf.write_text('PACKAGE_VERSION="v$PACKAGE_NAME"\n')
    plain, bash = both([conf], scope={**SCOPE, "PACKAGE_NAME": "from-scope"})
    assert plain is not None and plain == bash


NEEDS_BASH = {
    "command substitution": 'PACKAGE_VERSION="$(date)"\n',
    "backticks": "PACKAGE_VERSION=`nproc`\n",
    "escapes": 'MAKE="make \\$kernelver"\n',
    "glob in a value": 'BUILT_MODULE_LOCATION="src/*"\n',
    "parameter operators": 'PACKAGE_VERSION="${kernelver:-x}"\n',
    "positional": 'PACKAGE_VERSION="$1"\n',
    "environment variable": 'PACKAGE_VERSION="$HOME"\n',
    "bash's own variable": 'PACKAGE_VERSION="$BASH_VERSION"\n',
    "readconf's own variable": 'PACKAGE_VERSION="$__file"\n',
    "array literal": "BUILT_MODULE_NAME=(a b)\n",
    "append": "PACKAGE_NAME+=x\n",
    "a command": "echo hello\nPACKAGE_NAME=x\n",
    "two assignments on a line": "PACKAGE_NAME=x PACKAGE_VERSION=1\n",
    "prefix assignment of a command": "PACKAGE_NAME=x true\n",
    "quote spanning lines": 'MAKE="make\n  all"\n',
    "CRLF line ends": 'PACKAGE_NAME="x"\r\n',
    "word splitting changed": 'IFS=:\nPACKAGE_NAME="a:b"\n',
    "octal index": "BUILT_MODULE_NAME[08]=x\n",
    "arithmetic index": "BUILT_MODULE_NAME[i]=x\n",
    "export": "export PACKAGE_NAME=x\n",
    "hash glued to a word": 'PACKAGE_NAME="x"#y\n',
    "directive variable": "DKMS_DIRECTIVE_A=MAKE=x\n",
    "not UTF-8": b"PACKAGE_NAME='\xff'\n",
}


@pytest.mark.parametrize("text", NEEDS_BASH.values(), ids=NEEDS_BASH.keys())
def test_anything_else_is_left_to_bash(text: str | bytes, tmp_path: Path) -> None:
    conf = tmp_path / "dkms.conf"
    conf.write_bytes(text.encode() if isinstance(text, str) else text)
    assert staticconf.read([conf], NAMES, scope=SCOPE, deprecated=DEPRECATED, env={}) is None


def test_directives_from_the_environment_are_left_to_bash(tmp_path: Path) -> None:
    conf = tmp_path / "dkms.conf"
    conf.write_text("PACKAGE_NAME=x\n")
    env = {"DKMS_DIRECTIVE_1": "PACKAGE_VERSION=7"}
    assert staticconf.read([conf], NAMES, scope=SCOPE, deprecated=DEPRECATED, env=env) is None
    assert bashconf.source_files([conf], NAMES, scope=SCOPE, env=env).scalar("PACKAGE_VERSION") == "7"


def test_source_files_starts_no_bash_for_a_plain_file(tmp_path: Path, mocker: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "dkms.conf"
    conf.write_text("PACKAGE_NAME=x\nPACKAGE_VERSION=1\n")
    spy = mocker.spy(run, "run")  # type: ignore[attr-defined]
    assert bashconf.source_files([conf], NAMES, scope=SCOPE).scalar("PACKAGE_NAME") == "x"
    assert spy.call_count == 0
    conf.write_text("PACKAGE_NAME=$(echo x)\nPACKAGE_VERSION=1\n")
    assert bashconf.source_files([conf], NAMES, scope=SCOPE).scalar("PACKAGE_NAME") == "x"
    assert spy.call_count == 1
