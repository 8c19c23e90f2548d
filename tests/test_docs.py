"""The man page: valid roff, and it names every verb, option, dkms.conf directive and
setting the code knows (read from the code, so a new one cannot go undocumented)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import pytest
from conftest import REPO

from dkms_hooks.cli import cmdline
from dkms_hooks.model import dkmsconf, settings

MAN = REPO / "docs" / "dkms.8"


def rendered() -> str:
    # one long line per paragraph: nothing is hyphenated or broken
    res = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-rLL=3000n", "-rHY=0"],
        input=MAN.read_text(),
        capture_output=True,
        text=True,
        check=True,
        env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    assert res.stderr == ""
    # plain text: no overstrike, one space
    text = re.sub(r".\x08", "", res.stdout)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return re.sub(r"\s+", " ", text.replace("\u2010", "-").replace("\u2212", "-"))


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")
def test_man_page_covers_the_interface() -> None:
    text = rendered()
    listed = cmdline.USAGE.format(prog="dkms").split("{", 1)[1].split("}", 1)[0]
    verbs = set(re.findall(r"[a-z_]+", listed)) | {"conf", "plan", "event"}
    assert len(verbs) == 18
    assert sorted(v for v in verbs if not re.search(rf"\b{v}\b", text)) == []
    options = set(re.findall(r'"(-[-a-zA-Z_]+)"', (REPO / "dkms_hooks/cli/cmdline.py").read_text()))
    options |= {"--build", "--json"}  # issue 7's additions (status --json, plan --build)
    assert sorted(o for o in options if o not in text) == []
    assert sorted(d for d in dkmsconf.DIRECTIVES if d not in text) == []
    assert sorted(s for s in settings.NONSIGNING + settings.SIGNING if s not in text) == []
    toml = [f.name for f in dataclasses.fields(settings.HooksSettings) if f.name != "extra"]
    assert sorted(s for s in toml if f"{s} =" not in text) == []
    for source in ("kernel-install", "apt", "pacman", "rpm", "gentoo"):
        assert f"{source} " in text
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 70, 77):
        assert re.search(rf"EXIT STATUS.* {code} ", text)
