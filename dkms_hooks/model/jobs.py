"""The unit of work and what became of it: a job is one module version for one kernel; an
outcome record says what happened to a job (or to a module source, kernel-less). Every
request, from ``dkms autoinstall`` to a pacman hook, is planned into jobs and answered with
records; what is printed from them is the caller's view."""

from __future__ import annotations

from dataclasses import dataclass

from dkms_hooks.system.compat import StrEnum
from dkms_hooks.system.errors import EXIT_SKIPPED, DkmsError


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
    #: for an install: where its modules came from ("make", "cache", "registry"), and why
    #: the cache could not serve when it was asked
    source: str = ""
    cache_note: str = ""


def finished(code: int | None) -> bool:
    """A job that ran and did what it should (or that BUILD_EXCLUSIVE skipped)."""
    return code in (0, EXIT_SKIPPED)


@dataclass(frozen=True)
class Ran:
    """What the runner saw of one job: its exit code (None: not run, a job it needs
    failed) and the error it ended with, when it did not report that itself."""

    job: Job
    code: int | None
    error: DkmsError | None = None

    @property
    def done(self) -> bool:
        return finished(self.code)
