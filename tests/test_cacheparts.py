"""The build cache's parts without a kernel: settings, the key's tree digest and path
rule, the host store's renames and least-recently-used pruning, signature parsing."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest
from conftest import Sandbox

from dkms_hooks.model.settings import CacheSettings, SettingsError, load_hooks_settings, parse_size
from dkms_hooks.model import x509
from dkms_hooks.ops.cache import signature
from dkms_hooks.ops.cache.key import tree_digest, unseen_paths
from dkms_hooks.ops.cache.remote import Target
from dkms_hooks.ops.cache.store import Built, HostCache


def test_cache_settings(tmp_path: Path) -> None:
    toml = tmp_path / "dkms-hooks.toml"
    toml.write_text('[cache]\nmax_size = "500M"\nremote = "oci://reg.example:5000/fleet/dkms"\npush = true\n'
                    'trusted_certificates = ["/etc/dkms/fleet.der"]\ntimeout = 2.5\n')
    c = load_hooks_settings(toml).cache
    assert c == CacheSettings(True, "", 500 << 20, "oci://reg.example:5000/fleet/dkms", True, "",
                              ("/etc/dkms/fleet.der",), 2.5)
    assert load_hooks_settings(tmp_path / "absent.toml").cache == CacheSettings()


@pytest.mark.parametrize("text, message", [
    ('[cache]\nmax_size = "lots"\n', "max_size must be a size"),
    ('[cache]\nremote = "https://x/y"\n', "remote must look like oci://"),
    ('[cache]\nremote = "oci://x/Upper"\n', "remote must look like oci://"),
    ('[cache]\npush = "yes"\n', "push must be true or false"),
    ('[cache]\ntimeout = 0\n', "timeout must be a number of seconds > 0"),
    ('[cache]\ntrusted_certificates = "/x"\n', "trusted_certificates must be a list"),
    ('[cache]\nmaxsize = 1\n', "[cache] has no setting 'maxsize'"),
    ('cache = 1\n', "[cache] must be a table"),
])
def test_bad_cache_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "dkms-hooks.toml"
    toml.write_text(text)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[")):
        load_hooks_settings(toml)


def test_sizes() -> None:
    assert parse_size(1024) == 1024
    assert parse_size("2G") == 2 << 30
    assert parse_size("1.5k") == 1536
    assert parse_size("10MiB") == 10 << 20
    for bad in ("", "-1", "G", True, -3):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_tree_digest_sees_paths_modes_and_bytes_not_owners_or_times(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "x.c").write_text("int x;\n")
    (a / "sub/y.h").write_text("#define Y\n")
    (a / "link").symlink_to("x.c")
    base = tree_digest(a)
    os.utime(a / "x.c", (1, 1))
    assert tree_digest(a) == base
    assert tree_digest(a, skip=("x.c",)) != base
    (a / "x.c").chmod(0o600)
    assert tree_digest(a) != base
    (a / "x.c").chmod(0o644)
    b = tmp_path / "b"
    os.rename(a, b)
    assert tree_digest(b) == base, "the tree's own place is not in the digest"
    (b / "sub/y.h").write_text("#define Z\n")
    assert tree_digest(b) != base
    (b / "sub/y.h").write_text("#define Y\n")
    (b / "link").unlink()
    (b / "link").symlink_to("sub/y.h")
    assert tree_digest(b) != base


def test_paths_a_build_names_outside_what_the_key_covers() -> None:
    covered = [Path("/var/lib/dkms/m/1/build"), Path("/lib/modules/6.1/build")]
    assert unseen_paths(["make -C /lib/modules/6.1/build M=/var/lib/dkms/m/1/build 2>/dev/null"], covered) == []
    assert unseen_paths(["[ -h /usr/bin/cc ] && CC=/usr/bin/gcc make objtool=/bin/true $(pwd)/x"], covered) == []
    assert unseen_paths(["make -C /opt/sdk/src INC=/lib/modules/6.1/buildx"], covered) == [
        "/opt/sdk/src", "/lib/modules/6.1/buildx"]


def test_registry_targets() -> None:
    t = Target.parse("oci://127.0.0.1:5000/fleet/dkms")
    assert (t.host, t.repository) == ("127.0.0.1:5000", "fleet/dkms")
    assert t.ref("ab" * 32) == "127.0.0.1:5000/fleet/dkms:" + "ab" * 32


def _entry(cache: HostCache, tmp_path: Path, key: str, size: int) -> None:
    ko = tmp_path / f"{key}.ko"
    ko.write_bytes(b"\x7fELF" + b"x" * size)
    assert cache.put(key, {"module": key}, [Built("src/m", ko)], None, None) is not None


def test_the_host_store_puts_once_and_prunes_the_least_recently_used(tmp_path: Path) -> None:
    cache = HostCache(tmp_path / "cache", max_size=10_000)
    keys = [c * 64 for c in "abc"]
    for i, k in enumerate(keys):
        _entry(cache, tmp_path, k, 4000)
        os.utime(cache.get(k).path / "manifest.json", (100 + i, 100 + i))  # type: ignore[union-attr]
    assert cache.put(keys[0], {}, [], None, None) is None, "an entry is never replaced"
    entry = cache.get(keys[0])
    assert entry is not None and [m.built_path for m in entry.modules] == ["src/m"]
    assert json.loads((entry.path / "manifest.json").read_text())["files"]["0.ko"]
    cache.touch(entry)  # a's entry is now the most recently used
    gone = cache.prune()
    assert [e.key for e in gone] == [keys[1]]
    assert sorted(e.key for e in cache.entries()) == [keys[0], keys[2]]
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")], "no half-made entry is left"
    assert cache.clear() == 2 and list(cache.entries()) == []


def test_a_signature_is_split_from_the_module() -> None:
    body, sig = b"\x7fELF" + b"\0" * 64, b"0\x82pkcs7"
    trailer = struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, len(sig))
    assert x509.split_module(body + sig + trailer + x509.MODULE_SIG_MAGIC) == (body, sig)
    assert x509.split_module(body) is None
    # a length that points before the start of the file is not a signature
    bad = struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 1 << 20)
    assert x509.split_module(body + bad + x509.MODULE_SIG_MAGIC) is None


def test_a_broken_entry_does_not_block_its_key(tmp_path: Path) -> None:
    cache = HostCache(tmp_path / "cache", max_size=1 << 20)
    key = "d" * 64
    broken = cache.root / key[:2] / key
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{half")
    assert cache.get(key) is None
    _entry(cache, tmp_path, key, 10)
    assert cache.get(key) is not None



def test_without_oras_the_registry_says_so_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dkms_hooks.ops.cache import remote

    monkeypatch.setitem(sys.modules, "oras", None)  # `import oras.provider` fails
    monkeypatch.setattr(remote, "_down", {})
    reg = remote.Registry(CacheSettings(remote="oci://127.0.0.1:1/x/y"), Path("/"))
    with pytest.raises(remote.RegistryError, match="the oras library is not installed"):
        reg.pull("a" * 64, tmp_path / "entry")
    # the rest of the run does not try again
    assert "oras" in reg.down


def test_a_missing_ca_file_or_auth_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("oras")
    from dkms_hooks.ops.cache import remote

    monkeypatch.setattr(remote, "_down", {})
    reg = remote.Registry(CacheSettings(remote="oci://127.0.0.1:1/x/y", ca_file="/etc/dkms/ca.pem"), tmp_path)
    with pytest.raises(remote.RegistryError, match=f"ca_file {tmp_path}/etc/dkms/ca.pem does not exist"):
        reg.pull("a" * 64, tmp_path / "entry")
    monkeypatch.setattr(remote, "_down", {})
    reg = remote.Registry(CacheSettings(remote="oci://127.0.0.1:1/x/y", registry_auth="/auth.json"), tmp_path)
    with pytest.raises(remote.RegistryError, match="registry_auth .*/auth.json does not exist"):
        reg.pull("a" * 64, tmp_path / "entry")


def test_cache_command_with_the_cache_off_and_with_bad_settings(sandbox: Sandbox) -> None:
    (sandbox.etc / "dkms-hooks.toml").write_text("[cache]\nenabled = false\n")
    res = sandbox.dkms("cache", "status")
    assert res.returncode == 0 and "(off: [cache] enabled = false)" in res.stdout and "0 entries" in res.stdout
    assert "nothing to do" in sandbox.dkms("cache", "prune").stdout
    assert json.loads(sandbox.dkms("cache", "status", "--json").stdout)["enabled"] is False
    res = sandbox.dkms("cache", "clear", "--json")
    assert res.returncode == 2 and "dkms cache clear does not support --json" in res.stderr
    (sandbox.etc / "dkms-hooks.toml").write_text('[cache]\nmax_size = "a lot"\n')
    res = sandbox.dkms("cache", "status")
    assert res.returncode == 1 and "[cache] max_size must be a size in bytes" in res.stderr
    assert "Traceback" not in res.stderr


def test_prune_sweeps_what_a_killed_dkms_left(tmp_path: Path) -> None:
    cache = HostCache(tmp_path / "cache", max_size=1 << 20)
    cache.root.mkdir()
    for name in (".new-x", ".gone-y", ".pull-z", ".pull-recent"):
        (cache.root / name).mkdir()
        if name != ".pull-recent":
            os.utime(cache.root / name, (1, 1))
    cache.prune()
    assert sorted(p.name for p in cache.root.iterdir()) == [".pull-recent"], "a pull in flight is left alone"
