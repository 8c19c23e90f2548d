"""The project on the system Python of other Debian releases, in the cached roots
(scripts/make-root): Debian 11's Python 3.9 with its packaged pluggy 0.13, and Debian 13's
Python 3.13. In each root the project is installed with the root's own python3 (a copy of
this checkout, not editable), then: the fast tests (no overlay, no kernel) against the
installed copy, the dkms.conf corpus comparison among them, and a real ``dkms add`` and
``dkms install`` of the example for the root's own kernel headers into a sandbox tree,
checked with modinfo. On Debian 11 the .deb is installed with dpkg as well."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, SHARED, checkout_files

from system.roots import ROOTS, in_root, needs_root

pytestmark = [pytest.mark.kernel]

PYTHONS = {"bullseye": (3, 9), "trixie": (3, 13)}


def checkout_copy(dest: Path) -> Path:
    """This checkout's files (tracked, or new and not ignored), and the shared corpus
    beside them where the tests look for it."""
    src = dest / "src"
    for rel in checkout_files():
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel, follow_symlinks=False)
    if (SHARED / "corpus").is_dir():
        shutil.copytree(SHARED / "corpus", dest / "shared/corpus")
    return src


def root_kernel(name: str) -> str:
    mods = ROOTS / name / "lib/modules"
    return sorted(k for k in (p.name for p in mods.iterdir()) if (mods / k / "build").is_symlink())[-1]


def part(out: str, name: str) -> str:
    return ("\n" + out.split(f"@@ {name}\n")[1]).split("\n@@ ")[0][1:] + "\n"


SANDBOX_INSTALL = """
sb=/tmp/sb; t="--dkmstree $sb/var/lib/dkms --sourcetree $sb/usr/src --installtree $sb/lib/modules"
mkdir -p $sb/var/lib/dkms $sb/usr/src $sb/lib/modules/$K
ln -s /lib/modules/$K/build $sb/lib/modules/$K/build
cp -a {src}/examples/dkms_hooks_example-1.0 $sb/usr/src/
dkms $t add dkms_hooks_example/1.0 >/dev/null
dkms $t install dkms_hooks_example/1.0 -k $K >/tmp/install.log 2>&1 || {{ cat /tmp/install.log; exit 1; }}
echo "@@ sandbox status"; dkms $t status
echo "@@ sandbox vermagic"; modinfo -F vermagic $sb/lib/modules/$K/updates/dkms/dkms_hooks_example.ko*
"""


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_root(n)) for n in PYTHONS])
def test_installed_and_run_with_the_roots_own_python(name: str, tmp_path: Path) -> None:
    src = checkout_copy(tmp_path)
    kver = root_kernel(name)
    major, minor = PYTHONS[name]
    res = in_root(name, f"""
export PATH=/usr/local/sbin:/usr/local/bin:$PATH PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
K={kver}
# a wheel built by this Python (with a setuptools new enough for pyproject metadata), then
# installed as pip installs it: its dependencies from the root (pluggy) or, where this
# Python needs them, from the wheels make-root downloaded (tomli on 3.9)
PYTHONPATH=/opt/test-tools python3 -m pip wheel -q --no-build-isolation --no-deps -w /tmp/wheel {src} \\
    >/tmp/pip.log 2>&1 || {{ cat /tmp/pip.log; exit 1; }}
python3 -m pip install -q --no-index --find-links /opt/test-wheels /tmp/wheel/dkms_hooks-*.whl \\
    >/tmp/pip.log 2>&1 || {{ cat /tmp/pip.log; exit 1; }}
echo "@@ python"
cd /tmp && python3 -c 'import sys, dkms_hooks; print(sys.version_info[:2], dkms_hooks.__file__)'
echo "@@ tests"
rc=0
DKMS_HOOKS_TEST_INSTALLED=1 PYTHONPATH=/opt/test-tools python3 -m pytest -q -p no:cacheprovider -m "not kernel" \\
    -W ignore::DeprecationWarning {src}/tests >/tmp/pytest.log 2>&1 || rc=$?
tail -15 /tmp/pytest.log
echo "pytest rc=$rc"
{SANDBOX_INSTALL.format(src=src)}
echo "@@ end"
""", share=(tmp_path,), timeout=1500)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert part(out, "python").startswith(f"({major}, {minor}) /usr/local/lib/python{major}.{minor}/dist-packages/"
                                          "dkms_hooks/__init__.py"), out
    tests = part(out, "tests")
    assert "pytest rc=0\n" in tests, tests
    assert " passed" in tests and " failed" not in tests, tests
    assert part(out, "sandbox status") == f"dkms_hooks_example/1.0, {kver}, x86_64: installed\n", out
    assert part(out, "sandbox vermagic").startswith(f"{kver} "), out


@needs_root("bullseye")
def test_the_deb_installs_on_debian_11_with_its_pluggy(tmp_path: Path) -> None:
    """dpkg -i of our .deb on Debian 11: its python3 3.9 and python3-pluggy 0.13 satisfy the
    package, and dkms runs with them (status, an install, a kernel event)."""
    out_dir = tmp_path / "out"
    subprocess.run([str(REPO / "packaging/deb/build-deb.sh"), str(out_dir)], cwd=REPO, check=True,
                   capture_output=True)
    deb = next(out_dir.glob("dkms-hooks_*_all.deb"))
    kver = root_kernel("bullseye")
    res = in_root("bullseye", f"""
K={kver}
dpkg -i {deb} >/tmp/dpkg.log 2>&1 || {{ cat /tmp/dpkg.log; exit 1; }}
echo "@@ pluggy"; /usr/bin/python3 -c 'import pluggy; print(pluggy.__version__)'
echo "@@ status"; dkms status
cp -a {REPO}/examples/dkms_hooks_example-1.0 /usr/src/
dkms install dkms_hooks_example/1.0 -k $K >/tmp/install.log 2>&1 || {{ cat /tmp/install.log; exit 1; }}
echo "@@ installed"; dkms status
echo "@@ vermagic"; modinfo -F vermagic /lib/modules/$K/updates/dkms/dkms_hooks_example.ko*
echo "@@ event"; dkms event apt kernel-prerm $K | tail -3
echo "@@ after"; dkms status
echo "@@ end"
""", share=(tmp_path,), timeout=900)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert part(out, "pluggy").startswith("0.13"), out
    assert part(out, "status") == "\n"
    assert part(out, "installed") == f"dkms_hooks_example/1.0, {kver}, x86_64: installed\n", out
    assert part(out, "vermagic").startswith(f"{kver} "), out
    assert f"  removed    dkms_hooks_example/1.0, {kver}\n" in part(out, "event"), out
    assert part(out, "after") == "dkms_hooks_example/1.0: added\n", out
