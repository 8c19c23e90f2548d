"""The fleet's build cache in an OCI registry, through the oras library: an entry is an
artifact of our type, tagged by its key, one layer per file.

The registry is not trusted: what comes back is checked against the layer digests and our
own manifest here, and (by the caller) each module's signature against the fleet's
certificates. Every call is bounded in time; a registry that fails once is left alone for
the rest of the run, so one outage costs one timeout, not one per module."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model.settings import CacheSettings
from dkms_hooks.ops.cache.store import ARTIFACT_TYPE, MANIFEST, NAMES

TYPE_CHECKING = False  # see dkms_hooks/__init__.py
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

FILE_TYPE = "application/vnd.dkms-hooks.file.v1"
CONFIG_TYPE = "application/vnd.dkms-hooks.build.config.v1+json"
_TITLE = "org.opencontainers.image.title"
_MAX_LAYER = 1 << 30

#: registries that failed in this run, and why: later jobs build at once
_down: dict[str, str] = {}
_down_lock = threading.Lock()
#: one connected client per registry for the run (one TLS session, one login), and a lock
#: that keeps the jobs' calls on it one at a time
_clients: dict[str, object] = {}
_io_locks: dict[str, threading.Lock] = {}


class RegistryError(Exception):
    """The registry could not serve (the reason is said in the summary)."""


class NotThere(RegistryError):
    """The registry has no artifact for the key: a plain miss."""


@dataclass(frozen=True)
class Target:
    host: str
    repository: str

    @classmethod
    def parse(cls, url: str) -> Target:
        host, _, repo = url.removeprefix("oci://").partition("/")
        return cls(host, repo)

    def ref(self, key: str) -> str:
        return f"{self.host}/{self.repository}:{key}"


def _bounded(seconds: float, what: str, fn: Callable[[], T]) -> T:
    """fn() in a helper thread, given up after ``seconds`` (the thread is left to die with
    the process: a hung socket must not hold a kernel transaction)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, name=f"registry {what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise RegistryError(f"the registry did not answer within {seconds:g} s")
    err = box.get("error")
    if isinstance(err, RegistryError):
        raise err
    if isinstance(err, BaseException):
        raise RegistryError(_describe(err, seconds)) from None
    return box["value"]  # type: ignore[return-value]


def _describe(e: BaseException, seconds: float) -> str:
    name = type(e).__name__
    if isinstance(e, ImportError):
        return "the oras library is not installed (pip install 'dkms-hooks[registry]')"
    if "Timeout" in name:
        return f"the registry did not answer within {seconds:g} s"
    if "ConnectionError" in name or "ConnectTimeout" in name:
        return "the registry is not reachable"
    if "SSLError" in name:
        return "the registry's TLS certificate was not accepted"
    text = str(e).splitlines()[0] if str(e) else name
    return f"the registry failed: {text[:200]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class Registry:
    def __init__(self, settings: CacheSettings, sysroot: Path) -> None:
        self.settings = settings
        self.target = Target.parse(settings.remote)
        self.sysroot = sysroot
        with _down_lock:
            self._io = _io_locks.setdefault(settings.remote, threading.Lock())

    @property
    def down(self) -> str:
        with _down_lock:
            return _down.get(self.settings.remote, "")

    def _fail(self, reason: str) -> None:
        with _down_lock:
            _down.setdefault(self.settings.remote, reason)

    def _auth_file(self) -> str | None:
        if self.settings.registry_auth:
            return os.fspath(self.sysroot / self.settings.registry_auth.lstrip("/"))
        return None

    def _connect(self) -> object:
        """An oras client with the auth scheme the registry asks for (Basic for a plain
        htpasswd registry, Bearer tokens for Harbor, GHCR, ECR...)."""
        if self.settings.remote in _clients:
            return _clients[self.settings.remote]
        import logging  # lazy: every build imports this module, few talk to a registry

        import oras.provider  # lazy: only hosts with a registry need oras (and requests)
        import requests.adapters  # lazy: as above

        # oras logs to stderr on its own; what goes wrong is said once, in our words
        logging.getLogger("oras").setLevel(logging.CRITICAL + 1)
        s = self.settings
        verify: bool | str = True
        if s.ca_file:
            verify = os.fspath(self.sysroot / s.ca_file.lstrip("/"))
            if not os.path.isfile(verify):
                raise RegistryError(f"[cache] ca_file {verify} does not exist")
        auth_file = self._auth_file()
        if auth_file and not os.path.isfile(auth_file):
            raise RegistryError(f"[cache] registry_auth {auth_file} does not exist")
        timeout = s.timeout

        class _Adapter(requests.adapters.HTTPAdapter):
            def send(self, *args: object, **kwargs: object) -> requests.Response:
                kwargs["timeout"] = timeout  # a socket that stalls ends the request
                return super().send(*args, **kwargs)  # type: ignore[arg-type]

        class _Client(oras.provider.Registry):  # type: ignore[misc]
            # oras retries failed requests for minutes with sleeps; a kernel transaction
            # builds locally instead, so each request is tried once
            def do_request(self, *args: object, **kwargs: object) -> requests.Response:
                return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)  # type: ignore

        scheme = "http" if s.insecure else "https"
        probe = requests.get(f"{scheme}://{self.target.host}/v2/", timeout=timeout, verify=verify)
        challenge = probe.headers.get("Www-Authenticate", "")
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        client = _Client(hostname=self.target.host, insecure=s.insecure, tls_verify=verify, auth_backend=backend)
        for prefix in ("http://", "https://"):
            client.session.mount(prefix, _Adapter())
        client.auth.load_configs(client.get_container(self.target.ref("x")), configs=[auth_file] if auth_file else None)
        if backend == "basic" and getattr(client.auth, "_basic_auth", None):
            # sent with every request, instead of each one being refused first and repeated
            client.session.headers.update(client.auth.get_auth_header())
        _clients[self.settings.remote] = client
        return client

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._io:
            return fn()

    def pull(self, key: str, into: Path) -> Path:
        """Fetch the artifact tagged ``key`` into the new directory ``into`` and check each
        file against its layer digest. NotThere when there is none; RegistryError when the
        registry cannot serve or what it serves is not a well-formed entry."""
        if self.down:
            raise RegistryError(self.down)
        try:
            return _bounded(self.settings.timeout, "pull", lambda: self._locked(lambda: self._pull(key, into)))
        except NotThere:
            raise
        except RegistryError as e:
            if "refused" not in str(e):
                self._fail(str(e))
            raise

    def _pull(self, key: str, into: Path) -> Path:
        client = self._connect()
        container = client.get_container(self.target.ref(key))  # type: ignore[attr-defined]
        url = f"{client.prefix}://{container.manifest_url()}"  # type: ignore[attr-defined]
        res = client.do_request(url, "GET", headers={  # type: ignore[attr-defined]
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
        if res.status_code == 404:
            raise NotThere(key)
        if res.status_code in (401, 403):
            raise RegistryError(f"the registry refused our credentials (HTTP {res.status_code})")
        if res.status_code != 200:
            raise RegistryError(f"the registry answered HTTP {res.status_code}")
        manifest = res.json()
        if manifest.get("artifactType") != ARTIFACT_TYPE and \
                manifest.get("config", {}).get("mediaType") != CONFIG_TYPE:
            raise RegistryError(f"refused: the artifact tagged {key[:12]} is not a dkms-hooks build")
        into.mkdir(mode=0o755)
        for layer in manifest.get("layers", []):
            name = (layer.get("annotations") or {}).get(_TITLE, "")
            digest, size = str(layer.get("digest", "")), int(layer.get("size", 0))
            if not NAMES.match(name) or (into / name).exists():
                raise RegistryError(f"refused: the artifact holds an unexpected file {name!r}")
            if size > _MAX_LAYER:
                raise RegistryError(f"refused: {name} is {size} bytes")
            client.download_blob(container, digest, os.fspath(into / name))  # type: ignore[attr-defined]
            if _sha256(into / name) != digest:
                raise RegistryError(f"refused: {name} does not match its digest {digest[:19]}")
        if not (into / MANIFEST).is_file():
            raise RegistryError("refused: the artifact has no manifest.json")
        return into

    def push(self, key: str, files: Mapping[str, Path]) -> None:
        if self.down:
            raise RegistryError(self.down)
        try:
            _bounded(self.settings.timeout * 3, "push", lambda: self._locked(lambda: self._push(key, files)))
        except RegistryError as e:
            self._fail(str(e))
            raise

    def _push(self, key: str, files: Mapping[str, Path]) -> None:
        import oras.oci  # lazy: as in _connect

        client = self._connect()
        container = client.get_container(self.target.ref(key))  # type: ignore[attr-defined]
        layers = []
        for name, path in sorted(files.items()):
            layer = oras.oci.NewLayer(os.fspath(path), media_type=FILE_TYPE)
            layer["annotations"] = {_TITLE: name}
            res = client.upload_blob(os.fspath(path), container, layer)  # type: ignore[attr-defined]
            if res.status_code not in (200, 201, 202):
                raise RegistryError(f"the registry refused a blob (HTTP {res.status_code})")
            layers.append(layer)
        config = json.dumps({"key": key}).encode()
        config_path = Path(files[MANIFEST]).parent / ".config.json"
        config_path.write_bytes(config)
        conf_layer = {"mediaType": CONFIG_TYPE, "size": len(config),
                      "digest": "sha256:" + hashlib.sha256(config).hexdigest()}
        res = client.upload_blob(os.fspath(config_path), container, conf_layer)  # type: ignore[attr-defined]
        if res.status_code not in (200, 201, 202):
            raise RegistryError(f"the registry refused the config (HTTP {res.status_code})")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": ARTIFACT_TYPE, "config": conf_layer, "layers": layers}
        res = client.upload_manifest(manifest, container)  # type: ignore[attr-defined]
        if res.status_code not in (200, 201):
            raise RegistryError(f"the registry refused the manifest (HTTP {res.status_code})")
