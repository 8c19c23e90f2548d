"""A real OCI registry for the tests: Debian's docker-registry (distribution 2.8) on
127.0.0.1, with htpasswd (bcrypt) auth and TLS from a throwaway CA."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "fleet", "s3cret-pass"


def available() -> bool:
    return shutil.which("docker-registry") is not None and shutil.which("htpasswd") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = d / "ca.key", d / "ca.pem", d / "server.key", d / "server.csr", d / "server.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", "/CN=dkms-hooks test CA")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@dataclass
class Registry:
    root: Path
    port: int
    ca: Path
    auth_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def start(self) -> None:
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")],
                                     stdout=log, stderr=subprocess.STDOUT)
        ctx = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"https://{self.host}/v2/", context=ctx, timeout=2)
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the registry did not start: {(self.root / 'registry.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def blobs(self) -> list[Path]:
        return sorted(self.storage.glob("docker/registry/v2/blobs/sha256/*/*/data"))


def start_registry(root: Path, *, level: str = "warn", readonly: bool = False) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca(root / "tls")
    htpasswd = root / "htpasswd"
    out = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], check=True, capture_output=True, text=True).stdout
    htpasswd.write_text(out.strip() + "\n")
    port = _free_port()
    (root / "config.yml").write_text(f"""version: 0.1
log:
  level: {level}
storage:
  filesystem:
    rootdirectory: {root / 'storage'}
  delete:
    enabled: true
  maintenance:
    readonly:
      enabled: {str(readonly).lower()}
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: dkms-hooks-test
    path: {htpasswd}
""")
    auth = root / "docker-config.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {f"127.0.0.1:{port}": {"auth": token}}}))
    reg = Registry(root, port, ca, auth)
    reg.start()
    return reg
