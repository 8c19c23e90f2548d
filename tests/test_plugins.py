from __future__ import annotations

import pluggy
import pytest

from dkms_hooks import hookimpl, plugins


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
    monkeypatch.setenv("DKMS_HOOKS_DISABLE_PLUGINS", "dkms_hooks.policy")
    pm = plugins.get_plugin_manager(load_entry_points=False)
    assert pm.hook.dkms_dest_module_location(distro="fedora", declared="/kernel") is None


def test_akmods_key_on_fedora(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dkms_hooks import policy
    from dkms_hooks.paths import Layout

    lay = Layout(sysroot=tmp_path)
    assert policy.dkms_signing_key(distro="fedora", kver="6.9", layout=lay) is None
    for rel in ("etc/pki/akmods/private/private_key.priv", "etc/pki/akmods/certs/public_key.der"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    pm = plugins.get_plugin_manager(load_entry_points=False)
    assert pm.hook.dkms_signing_key(distro="fedora", kver="6.9", layout=lay) == (
        str(tmp_path / "etc/pki/akmods/private/private_key.priv"), str(tmp_path / "etc/pki/akmods/certs/public_key.der"))
    assert pm.hook.dkms_signing_key(distro="debian", kver="6.9", layout=lay) is None
