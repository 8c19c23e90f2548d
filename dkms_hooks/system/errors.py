"""Exceptions that carry upstream's exit codes; turned into messages by ``report``,
at the entry point and for each job that fails on its own."""

from __future__ import annotations

from dataclasses import dataclass, field

TYPE_CHECKING = False  # see dkms_hooks/__init__.py
if TYPE_CHECKING:
    from dkms_hooks.system.console import Console


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
#: EX_SOFTWARE: a bug of ours, never a user's mistake
EXIT_INTERNAL = 70


def report(console: Console, e: DkmsError) -> None:
    """Print ``e`` as upstream's die prints it, without ending anything: the one place an
    error becomes text, for the entry point and for every job that fails on its own."""
    for line in e.preamble:
        console.print(line)
    if isinstance(e, SilentExit):
        return
    if isinstance(e, DkmsWarnExit):
        console.warn(*e.lines)
    else:
        console.error(*e.lines)
