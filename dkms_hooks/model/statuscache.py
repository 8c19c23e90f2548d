"""What status needs from a dkms.conf (module names, destinations, BUILD_EXCLUSIVE), cached
so that `dkms status` does not start bash once per line.

The key covers the dkms.conf and override files' content, kernel, arch, the kernel config's
identity, the distribution and the trees; a change to any of them reads the file again.
Only status uses the cache: builds and installs always read the file afresh."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model import x509
from dkms_hooks.model.confread import read_conf
from dkms_hooks.model.context import Context
from dkms_hooks.model.dkmsconf import BuiltModule
from dkms_hooks.model.modinfo import read_module_bytes


@dataclass(frozen=True)
class StatusConf:
    modules: tuple[BuiltModule, ...]
    excluded: frozenset[int]

    def module_excluded(self, index: int) -> bool:
        return index in self.excluded


class StatusCache:
    VERSION = 2

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.path = ctx.layout.hooks_state / "status-cache.json"
        self.data: dict[str, object] = {}
        #: a module file's signer, keyed on the file's path and stat (status --json)
        self.signers: dict[str, dict[str, str | None] | None] = {}
        self.dirty = False
        try:
            loaded = json.loads(self.path.read_text())
            if loaded.get("version") == self.VERSION:
                self.data = loaded.get("entries", {})
                self.signers = dict(loaded.get("signers", {}))
        except (OSError, ValueError, AttributeError, TypeError):
            pass

    def _key(self, module: str, version: str, kver: str, arch: str) -> str | None:
        ctx = self.ctx
        conf = ctx.layout.source_link(module, version) / "dkms.conf"
        h = hashlib.sha256()
        try:
            h.update(conf.read_bytes())
        except OSError:
            return None
        for extra in ctx.layout.conf_overrides(module, version, kver, arch):
            try:
                h.update(b"\0" + os.fsencode(extra) + b"\0" + extra.read_bytes())
            except OSError:
                continue
        kernel = ctx.kernel(kver, arch)
        try:
            st = kernel.config.stat()
            kconf = f"{kernel.config}:{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            kconf = "-"
        lay = ctx.layout
        h.update("\0".join([module, version, kver, arch, kconf, ctx.distro, ctx.addon_modules_dir,
                            str(lay.dkms_tree), str(lay.source_tree), str(lay.install_tree)]).encode())
        return h.hexdigest()

    def get(self, module: str, version: str, kver: str, arch: str) -> StatusConf | None:
        """The cached answer, or the file read now (and remembered when it is valid).
        None when the file cannot be read or is invalid (status then reads it as upstream)."""
        key = self._key(module, version, kver, arch)
        if key is not None and key in self.data:
            entry = self.data[key]
            assert isinstance(entry, dict)
            mods = tuple(BuiltModule(*m) for m in entry["modules"])
            return StatusConf(mods, frozenset(entry["excluded"]))
        if self.ctx.options.directives:
            return None  # --directive changes the answer and must be shown: no cache
        with self.ctx.subshell():
            conf = read_conf(self.ctx, module, version, kver, arch,
                                      str(self.ctx.layout.source_link(module, version) / "dkms.conf"), or_die=False)
        if not conf.ok or key is None:
            return None
        excluded = frozenset(m.index for m in conf.modules if conf.module_excluded(m.index))
        self.data[key] = {
            "modules": [[m.index, m.built_name, m.built_location, m.dest_name, m.dest_location,
                         m.declared_dest_location, m.strip] for m in conf.modules],
            "excluded": sorted(excluded),
        }
        self.dirty = True
        return StatusConf(tuple(conf.modules), excluded)

    def signature(self, path: Path) -> x509.Signer | None:
        """Who signed a module file (None when unsigned), read once per file version."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{os.fspath(path)}"
        if key in self.signers:
            return _signer_from(self.signers[key])
        try:
            signer = x509.module_signer(read_module_bytes(path))
        except (OSError, ValueError, EOFError):
            return None
        # one entry per path: the file's older versions go
        self.signers = {k: v for k, v in self.signers.items() if k.split(":", 3)[3] != os.fspath(path)}
        self.signers[key] = None if signer is None else {
            "issuer": signer.issuer, "issuer_der": signer.issuer_der.hex(), "serial": signer.serial.hex(),
            "skid": signer.skid.hex() if signer.skid is not None else None}
        self.dirty = True
        return signer

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".status-cache.{os.getpid()}.json")
            live = {k: v for k, v in self.signers.items() if os.path.exists(k.split(":", 3)[3])}
            tmp.write_text(json.dumps({"version": self.VERSION, "entries": self.data, "signers": live}))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only tree: no cache, same answers




def _signer_from(saved: dict[str, str | None] | None) -> x509.Signer | None:
    if not saved:
        return None
    skid = saved.get("skid")
    return x509.Signer(saved.get("issuer") or "", bytes.fromhex(saved.get("issuer_der") or ""),
                       bytes.fromhex(saved.get("serial") or ""), bytes.fromhex(skid) if skid is not None else None)
