"""Everything the user sees goes through one Console, so order between stdout and stderr
is kept (upstream's suite reads both through one pipe) and ``-q`` silences all of it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

TYPE_CHECKING = False  # see __init__.py
if TYPE_CHECKING:
    from typing import TextIO


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.quiet = False

    def _write(self, stream: TextIO, text: str) -> None:
        if self.quiet:
            return
        stream.write(text)
        stream.flush()

    def print(self, text: str = "", *, end: str = "\n") -> None:
        self._write(self.out, text + end)

    def eprint(self, text: str = "", *, end: str = "\n") -> None:
        self._write(self.err, text + end)

    def error(self, *lines: str) -> None:
        """Upstream's ``error``: a blank line, ``Error! `` and one line per argument, on stderr."""
        self._write(self.err, "\nError! " + "".join(line + "\n" for line in lines or ("",)))

    def warn(self, *lines: str) -> None:
        self._write(self.err, "Warning: " + "".join(line + "\n" for line in lines or ("",)))

    def deprecated(self, what: str) -> None:
        self._write(self.err, f"Deprecated feature: {what}\n")

    @contextlib.contextmanager
    def without_stderr(self) -> Iterator[None]:
        """Like ``2>/dev/null`` around a block."""
        saved = self.err
        self.err = open(os.devnull, "w")
        try:
            yield
        finally:
            self.err.close()
            self.err = saved

    def flush(self) -> None:
        self.out.flush()
        self.err.flush()


class BufferConsole(Console):
    """A console that keeps what a job prints, stdout and stderr interleaved as written."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        self.quiet = quiet
        self.items: list[tuple[bool, str]] = []

    def _write(self, stream: object, text: str) -> None:
        if not self.quiet:
            self.items.append((stream is self.err, text))

    def replay(self, target: Console) -> None:
        for is_err, text in self.items:
            if is_err:
                target.eprint(text, end="")
            else:
                target.print(text, end="")
