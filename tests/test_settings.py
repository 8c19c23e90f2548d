from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Sandbox

from dkms_hooks.model import settings
from dkms_hooks.model.paths import Layout


def test_framework_takes_only_known_variables(tmp_path: Path) -> None:
    etc = tmp_path / "etc/dkms"
    (etc / "framework.conf.d").mkdir(parents=True)
    (etc / "framework.conf").write_text('parallel_jobs=3\nsign_file=/x\nfoo=bar\n')
    (etc / "framework.conf.d/a.conf").write_text('do_status() { echo hijacked; }\nparallel_jobs=$((parallel_jobs+1))\n')
    layout = Layout(sysroot=tmp_path)
    values = settings.read_framework(layout, settings.NONSIGNING, scope={}, env={"PATH": "/usr/bin:/bin"})
    assert values["parallel_jobs"] == "4"
    assert "foo" not in values and "sign_file" not in values
    assert values["compress_xz_opts"] == "--check=crc32 --lzma2=dict=1MiB"


def test_environment_overrides_only_what_upstream_does_not_reset(tmp_path: Path) -> None:
    layout = Layout(sysroot=tmp_path)
    env = {"PATH": "/usr/bin:/bin", "parallel_jobs": "7", "compress_xz_opts": "-9"}
    values = settings.read_framework(layout, settings.NONSIGNING, scope={}, env=env)
    assert values["parallel_jobs"] == "7"
    assert values["compress_xz_opts"] == "--check=crc32 --lzma2=dict=1MiB"


def test_framework_hijacking_does_not_change_status(sandbox: Sandbox) -> None:
    (sandbox.etc / "framework.conf.d/evil.conf").write_text('do_status() { echo "hijacked"; }\nexit 3\n')
    res = sandbox.dkms("status")
    assert (res.returncode, res.output) == (0, "")


def test_hooks_toml(tmp_path: Path) -> None:
    p = tmp_path / "dkms-hooks.toml"
    assert settings.load_hooks_settings(p) == settings.HooksSettings()
    p.write_text('critical_modules = ["zfs", "nvidia"]\ninitramfs = "dracut"\njobs = 4\n')
    s = settings.load_hooks_settings(p)
    assert (s.critical_modules, s.initramfs, s.jobs) == (("zfs", "nvidia"), "dracut", 4)
    assert s.compiler_probe_cache is True
    p.write_text("compiler_probe_cache = false\n")
    assert settings.load_hooks_settings(p).compiler_probe_cache is False
    p.write_text("jobs = -1\n")
    with pytest.raises(settings.SettingsError, match="jobs must be"):
        settings.load_hooks_settings(p)
    p.write_text('compiler_probe_cache = "no"\n')
    with pytest.raises(settings.SettingsError, match="compiler_probe_cache must be true or false"):
        settings.load_hooks_settings(p)


def test_bad_toml_is_a_clear_error(sandbox: Sandbox) -> None:
    (sandbox.etc / "dkms-hooks.toml").write_text("critical_modules = [\n")
    res = sandbox.dkms("status")
    assert res.returncode == 1
    assert res.stderr.startswith(f"\nError! {sandbox.etc}/dkms-hooks.toml: ")
