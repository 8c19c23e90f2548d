"""The cache as a step of ``dkms build``: after the source is copied, patched and
PRE_BUILD has run, look the key up (this host, then the fleet's registry); after a build
that ran make, keep what it made. Nothing here ever fails a build: a cache that cannot be
read or written is a miss, said once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dkms_hooks.model import tree
from dkms_hooks.model.context import Context, Signing
from dkms_hooks.model.dkmsconf import ModuleConf
from dkms_hooks.model.kernel import KernelTarget
from dkms_hooks.ops.cache import signature, verify
from dkms_hooks.ops.cache.key import KeyInputs, compute, unseen_paths
from dkms_hooks.ops.cache.remote import NotThere, Registry, RegistryError
from dkms_hooks.ops.cache.store import MANIFEST, Built, Entry, HostCache, write_entry
from dkms_hooks.system.compat import StrEnum


class Source(StrEnum):
    """Where a build's modules came from (BuildRecord.source)."""

    make = "make"
    cache = "cache"
    registry = "registry"


@dataclass
class Lookup:
    key: str
    entry: Entry | None = None
    #: Source.cache or Source.registry on a hit
    source: str = Source.make
    #: why a hit was refused or the registry not used (for the summary and status)
    note: str = ""


def host_cache(ctx: Context) -> HostCache | None:
    c = ctx.hooks.cache
    if not c.enabled:
        return None
    return HostCache(ctx.layout.build_cache(c.path), c.max_size)


def dependency_symvers(ctx: Context, conf: ModuleConf, kver: str, arch: str) -> list[Path]:
    out = []
    for dep in conf.build_depends:
        for e in tree.status_entries(ctx.layout, dep, "", kver, arch):
            if e.state is tree.State.installed:
                path = ctx.layout.built_dir(dep, e.version, kver, arch) / "module/Module.symvers"
                if path.is_file():
                    out.append(path)
    return out


def inputs(ctx: Context, conf: ModuleConf, kernel: KernelTarget, module: str, version: str, *,
           make_command: str, build_dir: Path, env: dict[str, str], extra_env: dict[str, str],
           deps: Sequence[Path]) -> KeyInputs:
    modules = tuple((m.built_path, m.strip) for m in conf.modules if not conf.module_excluded(m.index))
    return KeyInputs(module, version, kernel, make_command, conf.scalar("CLEAN"), modules, build_dir, env,
                     extra_env, tuple((p.parents[4].name, _exports(p)) for p in deps))


def _exports(symvers: Path) -> str:
    """A dependency's exported symbols and CRCs (its Module.symvers also names the directory
    it was built in, which differs from host to host)."""
    items = sorted(verify.symvers(symvers).items())
    return hashlib.sha256("".join(f"{s} {c:08x}\n" for s, c in items).encode()).hexdigest()


def find(ctx: Context, key_inputs: KeyInputs, deps: Sequence[Path]) -> Lookup | None:
    """The key, and a verified entry for it if this host has one. None: no cache."""
    cache = host_cache(ctx)
    if cache is None:
        return None
    lay = ctx.layout
    kernel = key_inputs.kernel
    trees = [key_inputs.build_dir, lay.build_dir(key_inputs.module, key_inputs.version), lay.dkms_tree,
             Path(os.path.realpath(kernel.source_dir)), kernel.source_dir]
    covered = [*trees[:2], lay.version_dir(key_inputs.module, key_inputs.version), *trees[3:],
               lay.install_tree / kernel.kver, Path("/lib/modules") / kernel.kver,
               # a BUILD_DEPENDS module's tree (KBUILD_EXTRA_SYMBOLS): its exports are in the key
               *(lay.module_dir(name) for name, _ in key_inputs.dependency_symvers)]
    unseen = unseen_paths([key_inputs.make_command, key_inputs.clean_command], covered)
    if unseen:
        # prefer a miss to a wrong hit: what the build reads there is not in the key
        return Lookup("", note=f"not cached: its MAKE names {unseen[0]}, which the cache key cannot cover")
    try:
        key = compute(key_inputs, trees=trees)
    except OSError as e:
        ctx.console.warn(f"build cache: cannot compute the key ({e}); building.")
        return None
    found = Lookup(key)
    try:
        entry = cache.get(key)
        if entry is not None:
            why = verify.refusal(entry, key_inputs.kernel, [m for m, _ in key_inputs.modules], deps)
            if why is None and entry.signed:
                # pulled from the registry and kept signed: still one of the certificates
                # trusted now (the fleet's key may have been replaced since)
                why = _signature_refusal(ctx, entry)
            if why is None:
                cache.touch(entry)
                found.entry, found.source = entry, Source.cache
                return found
            cache.discard(key)
            found.note = f"the cached build was refused ({why})"
            ctx.console.warn(f"build cache: entry {key[:12]} refused: {why}; building.")
    except OSError as e:
        found.note = f"the build cache could not be read ({e})"
        return found
    if ctx.hooks.cache.remote:
        _pull(ctx, cache, found, key_inputs, deps)
    return found


def _trusted(ctx: Context) -> list[Path]:
    return [ctx.layout.sysroot / c.lstrip("/") for c in ctx.hooks.cache.trusted_certificates]


def _signature_refusal(ctx: Context, entry: Entry) -> str | None:
    """Why the entry's modules are not signed by a certificate the host trusts now, or None."""
    certs = _trusted(ctx)
    if not certs or not all(c.is_file() for c in certs):
        return "its modules are signed by the fleet's key, and [cache] trusts no certificate now"
    try:
        with tempfile.TemporaryDirectory(prefix="dkms-trust-") as tmp:
            bundle = signature.trusted_bundle(certs, Path(tmp))
            for m in entry.modules:
                why = signature.refusal(m.path, bundle)
                if why is not None:
                    return why
    except (OSError, ValueError) as e:
        return f"its signatures cannot be checked ({e})"
    return None


def _pull(ctx: Context, cache: HostCache, found: Lookup, key_inputs: KeyInputs, deps: Sequence[Path]) -> None:
    """Fetch the entry from the fleet's registry; it is kept only if every check passes,
    each module's signature among them."""
    certs = _trusted(ctx)
    if not certs:
        found.note = "the registry is not used: [cache] trusted_certificates is empty"
        return
    missing = [c for c in certs if not c.is_file()]
    if missing:
        found.note = f"the registry is not used: the trusted certificate {missing[0]} does not exist"
        return
    registry = Registry(ctx.hooks.cache, ctx.layout.sysroot)
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".pull-", dir=cache.root))
    except OSError as e:
        found.note = f"the registry is not used: the build cache cannot be written ({e})"
        return
    try:
        try:
            got = registry.pull(found.key, scratch / "entry")
        except NotThere:
            return
        except RegistryError as e:
            found.note = f"registry: {e}"
            return
        try:
            manifest = json.loads((got / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = None
        if not isinstance(manifest, dict) or manifest.get("key") != found.key or manifest.get("signed") is not True:
            found.note = "refused the registry's entry: its manifest does not describe this build"
            return
        entry = Entry(found.key, got, manifest)
        why = verify.refusal(entry, key_inputs.kernel, [m for m, _ in key_inputs.modules], deps)
        if why is None:
            why = _signature_refusal(ctx, entry)
        if why is not None:
            found.note = f"refused the registry's entry: {why}"
            ctx.console.warn(f"build cache: the registry's entry {found.key[:12]} was refused: {why}; building.")
            return
        adopted = cache.adopt(found.key, got) or cache.get(found.key)
        if adopted is not None and adopted.signed:
            found.entry, found.source, found.note = adopted, Source.registry, ""
    except (OSError, ValueError) as e:
        found.note = f"refused the registry's entry: {e}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def holds_fleet_key(ctx: Context, sign: Signing | None) -> bool:
    """Whether this host signs with one of the fleet's trusted certificates (only such a
    host pushes: what it pushes must verify on the others)."""
    if sign is None or not sign.enabled or not sign.cert:
        return False
    try:
        mine = signature.certificate_der(Path(sign.cert))
        return any(signature.certificate_der(c) == mine for c in _trusted(ctx))
    except (OSError, ValueError):
        return False


def share(ctx: Context, found: Lookup, sign: Signing | None, meta: dict[str, object], signed: Sequence[Built],
          symvers: Path | None, log: Path | None) -> None:
    """Push the signed modules of a build that ran make to the fleet's registry."""
    c = ctx.hooks.cache
    if not (c.remote and c.push) or found.entry is not None:
        return
    if not holds_fleet_key(ctx, sign):
        found.note = "not shared: this host does not sign with a certificate of [cache] trusted_certificates"
        return
    with tempfile.TemporaryDirectory(prefix="dkms-push-") as tmp:
        files = write_entry(Path(tmp), found.key, {**meta, "signed": True, "created": time.time()}, signed,
                            symvers, log)
        try:
            Registry(c, ctx.layout.sysroot).push(found.key, files)
        except (RegistryError, OSError) as e:
            found.note = f"not shared: {e}"
            ctx.console.warn(f"build cache: could not push to {c.remote}: {e}.")


def keep(ctx: Context, found: Lookup, meta: dict[str, object], modules: Sequence[Built], symvers: Path | None,
         log: Path | None) -> None:
    """Add what make built to this host's cache, and keep the cache within its size."""
    cache = host_cache(ctx)
    if cache is None:
        return
    try:
        cache.put(found.key, meta, modules, symvers, log)
        cache.prune()
    except OSError as e:
        ctx.console.warn(f"build cache: could not keep this build ({e}).")
