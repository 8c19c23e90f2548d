"""What a host hook tells the engine: kernels and module sources that came, went or are
being replaced. One event can carry any mix of them (a package manager transaction does);
the engine applies all of it in one transaction, removals before additions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace

TYPE_CHECKING = False  # see dkms_hooks/__init__.py
if TYPE_CHECKING:
    from typing import Any

#: the change fields, in the order the engine applies them
CHANGES = ("kernels_reinstalling", "kernels_removed", "sources_removed", "sources_added", "kernels_added")
_SOURCES = ("sources_added", "sources_removed")
#: removals, and the additions each one cancels when it comes later in a merged queue
_CANCELS = {"kernels_removed": "kernels_added", "sources_removed": "sources_added"}
_LABELS = {
    "kernels_reinstalling": "kernel reinstalling",
    "kernels_removed": "kernel removed",
    "sources_removed": "source removed",
    "sources_added": "source added",
    "kernels_added": "kernel added",
}


@dataclass(frozen=True)
class Source:
    """A module source an event names: a registration (``module`` and ``version``, as RPM's
    and Debian's scripts say it), or a directory (as pacman and the file triggers see
    it). A directory's name is never parsed: versions have dashes."""

    module: str = ""
    version: str = ""
    directory: str = ""

    @classmethod
    def named(cls, module: str, version: str = "") -> Source:
        return cls(module=module, version=version)

    @classmethod
    def at(cls, directory: str) -> Source:
        return cls(directory=directory)

    @classmethod
    def parse(cls, text: str) -> Source:
        """The queue's (and older versions') text form: an absolute directory, or ``name/version``."""
        if text.startswith("/"):
            return cls.at(text)
        module, _, version = text.partition("/")
        return cls.named(module, version)

    def __str__(self) -> str:
        return self.directory or (f"{self.module}/{self.version}" if self.version else self.module)


@dataclass(frozen=True)
class Event:
    #: kernels (or their headers) installed: every AUTOINSTALL module is built for them
    kernels_added: tuple[str, ...] = ()
    #: kernels of the same version about to be installed again: drop what was built for them
    kernels_reinstalling: tuple[str, ...] = ()
    #: kernels going away: every module is uninstalled and unbuilt for them
    kernels_removed: tuple[str, ...] = ()
    #: module sources that arrived: a registration, or a directory holding a dkms.conf
    sources_added: tuple[Source, ...] = ()
    #: module sources going away: a registration (every version when it names none), or a
    #: directory: the registrations whose ``source`` link points there
    sources_removed: tuple[Source, ...] = ()
    #: kernels to build added sources for besides every kernel with headers (the one a
    #: Gentoo ebuild is configured for: a note says so when its headers are missing)
    source_kernels: tuple[str, ...] = ()
    #: build added sources even when their dkms.conf does not ask for AUTOINSTALL (Arch's
    #: hook, RPM's %post and Gentoo's eclass build what a package brings; Debian's
    #: common.postinst does not)
    build_added_always: bool = False
    #: compare the source tree with the registrations: dpkg's file trigger says only that
    #: something under /usr/src changed
    rescan: bool = False
    #: run the work queued during the package manager transaction
    flush: bool = False
    #: input the adapter refused, a clear line each; the rest of the event still runs
    refused: tuple[str, ...] = ()
    #: which adapter produced it (for messages)
    source: str = ""
    #: the host builds the initramfs itself right after this event (kernel-install's later
    #: plugins, Debian's postinst.d/initramfs-tools): do not build it twice
    initramfs_follows: bool = False
    #: a package manager transaction is running and will flush queued work at its end
    defer: bool = False
    #: the boot waits for this one: the builds still running after boot_time_limit go on
    #: in the background
    at_boot: bool = False

    @property
    def empty(self) -> bool:
        return not (any(getattr(self, f) for f in CHANGES) or self.rescan or self.flush or self.refused)

    def describe(self) -> str:
        parts = [f"{_LABELS[f]} {' '.join(map(str, getattr(self, f)))}" for f in CHANGES if getattr(self, f)]
        if self.rescan:
            parts.append("rescan of the module sources")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _SOURCES:
            data[name] = [str(s) for s in getattr(self, name)]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """An event queued by this version, or by the one before it (one ``kind`` each),
        which a package upgrade of dkms-hooks itself may have left in the queue."""
        if "kind" in data:
            return _from_kind(data)
        known = {f.name for f in fields(cls)} - {"defer"}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        for name in _SOURCES:
            values[name] = tuple(Source.parse(s) for s in values.get(name, ()))
        return replace(cls(), **values)


def merge(events: Iterable[Event]) -> Event:
    """The queued events of one package transaction as one. A later removal cancels an
    earlier addition of the same kernel or source (installed, then removed again)."""
    acc: dict[str, list[Any]] = {f: [] for f in (*CHANGES, "source_kernels", "refused")}
    sources: list[str] = []
    always = rescan = False
    follows = True
    seen = False
    for ev in events:
        seen = True
        for removal, cancelled in _CANCELS.items():
            gone = set(getattr(ev, removal))
            acc[cancelled] = [x for x in acc[cancelled] if x not in gone]
        for name, items in acc.items():
            items += [x for x in getattr(ev, name) if x not in items]
        always |= ev.build_added_always
        rescan |= ev.rescan
        follows &= ev.initramfs_follows
        if ev.source and ev.source not in sources:
            sources.append(ev.source)
    merged = Event(build_added_always=always, rescan=rescan, initramfs_follows=follows and seen,
                   source=",".join(sources))
    changes: dict[str, Any] = {name: tuple(items) for name, items in acc.items()}
    return replace(merged, **changes)


def _from_kind(data: Mapping[str, Any]) -> Event:
    kind = data.get("kind", "")
    kernels = tuple(data.get("kernels") or ())
    modules = tuple(Source.parse(m) for m in data.get("modules") or ())
    common = {"source": data.get("source", ""), "initramfs_follows": bool(data.get("initramfs_follows"))}
    if kind in ("kernel-added", "headers-added"):
        return Event(kernels_added=kernels, sources_added=modules, **common)
    if kind == "source-added":
        return Event(sources_added=modules, **common)
    if kind == "source-removed":
        return Event(sources_removed=modules, **common)
    if kind == "kernel-removed":
        return Event(kernels_removed=kernels, **common)
    if kind == "kernel-reinstalling":
        return Event(kernels_reinstalling=kernels, **common)
    return Event(**common)
