from __future__ import annotations

import pluggy
import pytest

from dkms_hooks import hookimpl
from dkms_hooks.plugins import manager as plugins


def test_builtins_registered_and_answer() -> None:
    pm = plugins.get_plugin_manager(load_entry_points=False)
    assert pm.hook.dkms_dest_module_location(distro="fedora", declared="/kernel/x") == "/extra"
    assert pm.hook.dkms_dest_module_location(distro="gentoo", declared="/kernel/x") == "/kernel/x"


def test_third_party_plugin_wins_first() -> None:
    pm = plugins.get_plugin_manager(load_entry_points=False)

    class Local:
        @hookimpl
        def dkms_dest_module_location(self, distro: str, declared: str) -> str | None:
            return "/updates/local" if distro == "debian" else None

    pm.register(Local())
    assert pm.hook.dkms_dest_module_location(distro="debian", declared="/kernel") == "/updates/local"
    assert pm.hook.dkms_dest_module_location(distro="arch", declared="/kernel") == "/updates/dkms"


def test_misspelled_hook_is_an_error() -> None:
    pm = plugins.get_plugin_manager(load_entry_points=False)

    class Typo:
        @hookimpl
        def dkms_dest_modul_location(self) -> None:
            return None

    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_blocklist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKMS_HOOKS_DISABLE_PLUGINS", "dkms_hooks.plugins.policy")
    pm = plugins.get_plugin_manager(load_entry_points=False)
    assert pm.hook.dkms_dest_module_location(distro="fedora", declared="/kernel") is None


def test_akmods_key_on_fedora(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dkms_hooks.model.paths import Layout
    from dkms_hooks.plugins import policy

    lay = Layout(sysroot=tmp_path)
    assert policy.dkms_signing_key(distro="fedora", kver="6.9", layout=lay) is None
    for rel in ("etc/pki/akmods/private/private_key.priv", "etc/pki/akmods/certs/public_key.der"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    pm = plugins.get_plugin_manager(load_entry_points=False)
    assert pm.hook.dkms_signing_key(distro="fedora", kver="6.9", layout=lay) == (
        str(tmp_path / "etc/pki/akmods/private/private_key.priv"), str(tmp_path / "etc/pki/akmods/certs/public_key.der"))
    assert pm.hook.dkms_signing_key(distro="debian", kver="6.9", layout=lay) is None


def _install_plugin_distribution(where) -> None:  # type: ignore[no-untyped-def]
    """What pip leaves for a third-party plugin: its module and a dist-info naming it."""
    (where / "thirdparty_dkms.py").write_text(
        "from dkms_hooks import hookimpl\n\n"
        "@hookimpl\n"
        "def dkms_dest_module_location(distro, declared):\n"
        "    return '/updates/thirdparty'\n")
    info = where / "thirdparty_dkms-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-dkms\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nx = y:z\n\n[dkms_hooks]\nthirdparty = thirdparty_dkms\n")


def test_installed_plugin_found_through_its_entry_point(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not plugins.get_plugin_manager().has_plugin("thirdparty")
    _install_plugin_distribution(tmp_path)
    pm = plugins.get_plugin_manager()
    assert pm.has_plugin("thirdparty")
    assert pm.hook.dkms_dest_module_location(distro="debian", declared="/kernel") == "/updates/thirdparty"


def test_no_entry_point_scan_without_a_plugin_distribution(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """importlib.metadata costs every dkms call 40 ms: only imported when a plugin is there."""
    import subprocess
    import sys

    probe = ("import sys; from dkms_hooks.plugins import manager; pm = manager.get_plugin_manager(); "
             "print('importlib.metadata' in sys.modules, pm.has_plugin('thirdparty'))")
    env = {"PYTHONPATH": f"{tmp_path}:{':'.join(p for p in sys.path if p)}"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out == "False False\n"
    _install_plugin_distribution(tmp_path)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out == "True True\n"
