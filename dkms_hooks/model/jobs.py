"""The unit of work and what became of it: a job is one module version for one kernel; an
outcome record says what happened to a job (or to a module source, kernel-less). Every
request, from ``dkms autoinstall`` to a pacman hook, is planned into jobs and answered with
records; what is printed from them is the caller's view."""

from __future__ import annotations

from dataclasses import dataclass

from dkms_hooks.system.compat import StrEnum


@dataclass(frozen=True)
class Job:
    module: str
    version: str
    kver: str
    arch: str

    @property
    def label(self) -> str:
        return f"{self.module}/{self.version} for {self.kver}"


class Outcome(StrEnum):
    installed = "installed"
    current = "up to date"
    removed = "removed"
    added = "added"
    skipped = "skipped"
    failed = "failed"


@dataclass(frozen=True)
class Record:
    module: str
    version: str
    kver: str
    outcome: Outcome
    reason: str = ""
    log: str = ""
    critical: bool = False
