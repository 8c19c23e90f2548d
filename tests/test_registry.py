"""The build cache shared through a real OCI registry (Debian's docker-registry, TLS and
htpasswd auth): host A builds and pushes, host B installs without running make, and
every way the registry can lie or fail ends in a local build, never a wrong module."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import registry as oci
from conftest import KERNELS, Sandbox, make_sandbox, needs_kernel
from modsrc import write_module
from test_buildcache import counting_make, makes

pytestmark = [pytest.mark.kernel, needs_kernel,
              pytest.mark.skipif(not oci.available(), reason="docker-registry or htpasswd missing (run .ci/run)")]

MODULES = [f"fleetmod{i}" for i in range(1, 7)]


def keypair(d: Path, name: str) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    key, cert = d / f"{name}.key", d / f"{name}.der"
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-outform", "DER", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return key, cert


def host(base: Path, reg: oci.Registry, *, trusted: Path, push: bool = False,
         signing: tuple[Path, Path] | None = None, timeout: float = 10, remote: str = "") -> tuple[Sandbox, Path]:
    sb = make_sandbox(base)
    for k in KERNELS:
        sb.add_kernel(k)
    etc = sb.etc
    (etc / "registry.json").write_bytes(reg.auth_file.read_bytes())
    (etc / "registry-ca.pem").write_bytes(reg.ca.read_bytes())
    (etc / "fleet.der").write_bytes(trusted.read_bytes())
    (etc / "dkms-hooks.toml").write_text(f"""[cache]
remote = "{remote or f'oci://{reg.host}/fleet/modules'}"
push = {str(push).lower()}
registry_auth = "/etc/dkms/registry.json"
ca_file = "/etc/dkms/registry-ca.pem"
trusted_certificates = ["/etc/dkms/fleet.der"]
timeout = {timeout}
""")
    if signing is not None:
        (etc / "framework.conf.d/fleet.conf").write_text(
            f"mok_signing_key={signing[0]}\nmok_certificate={signing[1]}\n")
    for name in MODULES:
        write_module(sb.source_tree, name)
        sb.dkms("add", f"{name}/1.0", check=True)
    return sb, counting_make(sb, base)


def install_all(sb: Sandbox) -> list[str]:
    outs = []
    for k in KERNELS:
        res = sb.dkms("autoinstall", "-k", k)
        assert res.returncode == 0, res.output
        outs.append(res.output)
    return outs


def installed(sb: Sandbox) -> dict[str, bytes]:
    return {str(p.relative_to(sb.install_tree)): p.read_bytes()
            for p in sorted(sb.install_tree.glob("*/updates/dkms/*.ko*"))}


def sources(sb: Sandbox) -> dict[str, str]:
    out = {}
    for p in sb.dkms_tree.glob(".dkms-hooks/builds/*/*/*.json"):
        d = json.loads(p.read_text())
        out[f"{d['module']}/{d['kernel']}"] = f"{d['source']}: {d['cache_note']}".rstrip(": ")
    return out


@pytest.fixture
def fleet(tmp_path: Path):
    reg = oci.start_registry(tmp_path / "registry", level="info")
    key, cert = keypair(tmp_path / "keys", "fleet")
    a, a_makes = host(tmp_path / "a", reg, trusted=cert, push=True, signing=(key, cert))
    install_all(a)
    assert makes(a_makes) == len(MODULES) * len(KERNELS)
    yield reg, (key, cert), a
    reg.stop()


def test_host_b_installs_the_fleet_s_builds_without_make(fleet, tmp_path: Path) -> None:
    reg, (_key, cert), a = fleet
    b, b_makes = host(tmp_path / "b", reg, trusted=cert)
    install_all(b)
    assert makes(b_makes) == 0
    assert installed(b) == installed(a) and len(installed(b)) == len(MODULES) * len(KERNELS)
    assert set(sources(b).values()) == {"registry"}
    for ko in (b.install_tree).glob("*/updates/dkms/*.ko"):
        info = subprocess.run(["modinfo", "-F", "signer", str(ko)], capture_output=True, text=True,
                              check=True).stdout
        assert info.strip() == "fleet"
    # B's own key never touched them: installed as signed by the fleet, not re-signed
    status = b.dkms("status", check=True).stdout
    assert status.count(": installed") == len(MODULES) * len(KERNELS)
    # and a second transaction on B reuses its own copy, without the registry
    reg.stop()
    b.dkms("remove", "fleetmod1/1.0", "--all", check=True)
    b.dkms("add", "fleetmod1/1.0", check=True)
    res = b.dkms("install", "fleetmod1/1.0", "-k", KERNELS[0], check=True)
    assert makes(b_makes) == 0, res.output
    # the fleet's key is replaced: what B kept signed by the old one is not used any more
    _new_key, new_cert = keypair(tmp_path / "keys2", "fleet-2027")
    (b.etc / "fleet.der").write_bytes(new_cert.read_bytes())
    b.dkms("remove", "fleetmod2/1.0", "--all", check=True)
    b.dkms("add", "fleetmod2/1.0", check=True)
    res = b.dkms("install", "fleetmod2/1.0", "-k", KERNELS[0], check=True)
    assert "refused: 0.ko is not signed by a trusted certificate; building." in res.stderr
    assert makes(b_makes) == 1


def test_a_tampered_blob_is_refused_and_built_locally(fleet, tmp_path: Path) -> None:
    reg, (_key, cert), _a = fleet
    for blob in reg.blobs():
        data = blob.read_bytes()
        if data.startswith(b"\x7fELF"):
            blob.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    b, b_makes = host(tmp_path / "b", reg, trusted=cert)
    install_all(b)
    assert makes(b_makes) == len(MODULES) * len(KERNELS)
    notes = set(sources(b).values())
    assert all(n.startswith("make: registry: refused: 0.ko does not match its digest") for n in notes), notes
    assert not list(b.dkms_tree.glob(".dkms-hooks/cache/.pull-*"))
    assert "installed" in b.dkms("status", check=True).stdout


def test_another_signer_and_an_unsigned_artifact_are_refused(fleet, tmp_path: Path) -> None:
    reg, (_key, fleet_cert), _a = fleet
    # host C signs with its own key and (wrongly) pushes to the fleet's repository
    other_key, other_cert = keypair(tmp_path / "keys2", "intruder")
    c, _ = host(tmp_path / "c", reg, trusted=other_cert, push=True, signing=(other_key, other_cert),
                remote=f"oci://{reg.host}/fleet/other")
    install_all(c)
    b, b_makes = host(tmp_path / "b", reg, trusted=fleet_cert, remote=f"oci://{reg.host}/fleet/other")
    res = b.dkms("install", "fleetmod1/1.0", "-k", KERNELS[0], check=True)
    assert "0.ko is not signed by a trusted certificate; building." in res.stderr
    assert makes(b_makes) == 1
    # an artifact whose modules are not signed at all: C's own unsigned cache entry, pushed
    # as if it were signed
    from dkms_hooks.model.settings import CacheSettings
    from dkms_hooks.ops.cache.remote import Registry
    entry = next(p.parent for p in c.dkms_tree.glob(".dkms-hooks/cache/*/*/manifest.json")
                 if json.loads(p.read_text())["module"] == "fleetmod2"
                 and json.loads(p.read_text())["kernel"] == KERNELS[0])
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["signed"] = True
    (entry / "manifest.json").write_text(json.dumps(manifest))
    settings = CacheSettings(remote=f"oci://{reg.host}/fleet/other", ca_file=str(reg.ca),
                             registry_auth=str(reg.auth_file))
    Registry(settings, Path("/")).push(entry.name, {p.name: p for p in entry.iterdir()})
    res = b.dkms("install", "fleetmod2/1.0", "-k", KERNELS[0], check=True)
    assert "0.ko is not signed; building." in res.stderr
    assert makes(b_makes) == 2
    # layers that match their digests, and a manifest whose hashes do not match them
    entry = next(p.parent for p in c.dkms_tree.glob(".dkms-hooks/cache/*/*/manifest.json")
                 if json.loads(p.read_text())["module"] == "fleetmod3"
                 and json.loads(p.read_text())["kernel"] == KERNELS[0])
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["signed"] = True
    manifest["files"]["0.ko"] = "0" * 64
    (entry / "manifest.json").write_text(json.dumps(manifest))
    Registry(settings, Path("/")).push(entry.name, {p.name: p for p in entry.iterdir()})
    res = b.dkms("install", "fleetmod3/1.0", "-k", KERNELS[0], check=True)
    assert "0.ko does not match its manifest's hash; building." in res.stderr
    assert makes(b_makes) == 3
    assert set(sources(b)) == {f"fleetmod{i}/{KERNELS[0]}" for i in (1, 2, 3)}
    # what B keeps is its own builds only, nothing it refused
    kept = [json.loads(p.read_text()) for p in b.dkms_tree.glob(".dkms-hooks/cache/*/*/manifest.json")]
    assert len(kept) == 3 and not any(m.get("signed") for m in kept)


def test_a_registry_stopped_mid_transaction_falls_back_to_local_builds(fleet, tmp_path: Path) -> None:
    reg, (_key, cert), _a = fleet
    b, b_makes = host(tmp_path / "b", reg, trusted=cert, timeout=5)
    log = reg.root / "registry.log"
    start = log.stat().st_size

    def stop_after_first_blob() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(log, "rb") as f:
                f.seek(start)
                if b"/blobs/sha256:" in f.read():
                    reg.stop()
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=stop_after_first_blob)
    watcher.start()
    install_all(b)
    watcher.join()
    assert reg.proc is None, "the registry was never asked for a blob"
    counted = makes(b_makes)
    assert 0 < counted <= len(MODULES) * len(KERNELS)
    notes = sources(b)
    built = [k for k, v in notes.items() if v.startswith("make")]
    assert len(built) == counted
    assert all("registry" in notes[k] for k in built), notes
    # nothing half-installed: every module installed, the same modules as A's where pulled
    status = b.dkms("status", check=True).stdout
    assert status.count(": installed") == len(MODULES) * len(KERNELS)
    assert not list(b.dkms_tree.glob(".dkms-hooks/cache/.pull-*"))


def test_a_registry_that_never_answers_costs_one_timeout(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections into its backlog and never answers
    port = silent.getsockname()[1]
    ca, _cert, _key = oci.make_ca(tmp_path / "tls")
    reg = oci.Registry(tmp_path, port, ca, tmp_path / "auth.json")
    reg.auth_file.write_text("{}")
    _key, cert = keypair(tmp_path / "keys", "fleet")
    b, b_makes = host(tmp_path / "b", reg, trusted=cert, timeout=2)
    try:
        started = time.monotonic()
        res = b.dkms("autoinstall", "-k", KERNELS[0])
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert res.returncode == 0, res.output
    assert makes(b_makes) == len(MODULES)
    notes = set(sources(b).values())
    assert notes == {"make: registry: the registry did not answer within 2 s"}, notes
    # one timeout for the run, not one per module (6 x 2 s)
    assert elapsed < 2 * len(MODULES), elapsed


def test_a_registry_that_refuses_writes_never_fails_the_build(tmp_path: Path) -> None:
    reg = oci.start_registry(tmp_path / "registry", readonly=True)
    try:
        key, cert = keypair(tmp_path / "keys", "fleet")
        a, a_makes = host(tmp_path / "a", reg, trusted=cert, push=True, signing=(key, cert))
        res = a.dkms("install", "fleetmod1/1.0", "-k", KERNELS[0])
        assert res.returncode == 0, res.output
        assert "Warning: build cache: could not push to oci://" in res.stderr
        assert makes(a_makes) == 1
        assert sources(a)[f"fleetmod1/{KERNELS[0]}"].startswith("make: not shared: ")
        # the host's own cache still has it
        a.dkms("remove", "fleetmod1/1.0", "--all", check=True)
        a.dkms("add", "fleetmod1/1.0", check=True)
        a.dkms("install", "fleetmod1/1.0", "-k", KERNELS[0], check=True)
        assert makes(a_makes) == 1
    finally:
        reg.stop()


def test_only_a_host_holding_the_fleet_key_pushes(tmp_path: Path) -> None:
    reg = oci.start_registry(tmp_path / "registry")
    try:
        _key, cert = keypair(tmp_path / "keys", "fleet")
        d, _ = host(tmp_path / "d", reg, trusted=cert, push=True)  # signs with its own MOK
        d.dkms("install", "fleetmod1/1.0", "-k", KERNELS[0], check=True)
        assert sources(d)[f"fleetmod1/{KERNELS[0]}"] == (
            "make: not shared: this host does not sign with a certificate of [cache] trusted_certificates")
        assert reg.blobs() == []
    finally:
        reg.stop()
