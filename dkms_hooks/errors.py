"""Exceptions that carry upstream's exit codes; turned into messages in cli.main only."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DkmsError(Exception):
    """Upstream's ``die N msg...``: an ``Error!`` block on stderr, then exit N."""

    code: int
    lines: tuple[str, ...] = ()
    #: printed plainly on stdout before the error (upstream's ``Consult ... for more information.``)
    preamble: tuple[str, ...] = field(default=())

    def __init__(self, code: int, *lines: str, preamble: tuple[str, ...] = ()) -> None:
        super().__init__(code, *lines)
        self.code = code
        self.lines = lines
        self.preamble = preamble

    def __str__(self) -> str:
        return " ".join(self.lines)


class DkmsWarnExit(DkmsError):
    """Upstream's ``diewarn N msg...``: a ``Warning:`` block, then exit N (77 = BUILD_EXCLUSIVE skip)."""


class SilentExit(DkmsError):
    """Exit with a code and print nothing more (the message was already shown)."""


#: upstream's exit code for "skipped by BUILD_EXCLUSIVE"
EXIT_SKIPPED = 77
