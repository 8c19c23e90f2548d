"""A live status line while jobs run side by side, and colour, on a terminal only.

Job output is printed whole when a job ends (in serial order), so a long build shows
nothing for minutes; on a terminal one line on stderr, redrawn in place, says what runs,
for how long, and what waits. In pipes and logs nothing of this is written, and the output
stays the plain lines it always was. Colour needs a terminal too, and no NO_COLOR."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TextIO

from dkms_hooks.system.console import BufferConsole, Console
from dkms_hooks.system.errors import EXIT_SKIPPED

_CLEAR = "\r\033[K"
_COLOURS = {"ok": "32", "failed": "31", "skipped": "33"}


def live_terminal(stream: TextIO, env: Mapping[str, str]) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and env.get("TERM", "") not in ("", "dumb")


def colour_enabled(stream: TextIO, env: Mapping[str, str]) -> bool:
    # https://no-color.org: set and not empty means no colour
    return live_terminal(stream, env) and not env.get("NO_COLOR")


def paint(text: str, kind: str, enabled: bool) -> str:
    """``text`` in the colour of ``kind`` (ok, failed, skipped) when enabled."""
    code = _COLOURS.get(kind)
    return f"\033[{code}m{text}\033[0m" if enabled and code else text


def kind_of(code: int | None) -> str:
    if code == 0:
        return "ok"
    if code == EXIT_SKIPPED or code is None:
        return "skipped"
    return "failed"


class Progress:
    """The status line of one run of jobs. ``run_jobs`` reports starts and ends and wraps
    its printing in ``suspended()``; a ticker redraws the elapsed times every second."""

    def __init__(self, stream: TextIO, labels: Sequence[str], *, colour: bool, interval: float = 1.0) -> None:
        self.stream = stream
        self.labels = list(labels)
        self.colour = colour
        self.interval = interval
        self.started: dict[int, float] = {}
        self.results: dict[int, int | None] = {}
        self.begin = time.monotonic()
        self.lock = threading.RLock()
        self.shown = False
        self.stop = threading.Event()
        self.ticker = threading.Thread(target=self._tick, daemon=True)
        self.ticker.start()

    def _tick(self) -> None:
        while not self.stop.wait(self.interval):
            self.draw()

    def job_started(self, i: int) -> None:
        with self.lock:
            self.started[i] = time.monotonic()
            self.draw()

    def job_done(self, i: int, code: int | None) -> None:
        with self.lock:
            self.results[i] = code
            self.started.pop(i, None)
            self.draw()

    def line(self) -> str:
        now = time.monotonic()
        kinds = [kind_of(c) for c in self.results.values()]
        total = len(self.labels)
        counts = f"{len(self.results)}/{total} done"
        for kind in ("failed", "skipped"):
            n = kinds.count(kind)
            if n:
                counts += ", " + paint(f"{n} {kind}", kind, self.colour)
        running = ", ".join(f"{self.labels[i]} ({now - t:.0f}s)" for i, t in sorted(self.started.items()))
        waiting = [self.labels[i] for i in range(total) if i not in self.started and i not in self.results]
        text = f"[{counts}, {now - self.begin:.0f}s] running: {running or '-'}"
        if waiting:
            text += f"; waiting: {len(waiting)} ({', '.join(waiting)})"
        return text

    def draw(self) -> None:
        with self.lock:
            if self.stop.is_set():
                return
            width = shutil.get_terminal_size((80, 24)).columns
            self._write(_CLEAR + _fit(self.line(), width - 1))
            self.shown = True

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                self._write(_CLEAR)
                self.shown = False

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Print something else: the line goes, and comes back after."""
        with self.lock:
            self.clear()
            try:
                yield
            finally:
                self.draw()

    def close(self) -> None:
        with self.lock:
            self.clear()
            self.stop.set()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stop.set()


def _fit(text: str, width: int) -> str:
    """Cut to the terminal's width, counting what is visible (not colour codes), so the
    line never wraps (a wrapped line cannot be redrawn in place)."""
    out: list[str] = []
    visible = 0
    i = 0
    while i < len(text):
        if text[i] == "\033":
            end = text.index("m", i) + 1
            out.append(text[i:end])
            i = end
            continue
        if visible >= width:
            out.append("\033[0m" if "\033[" in text else "")
            break
        out.append(text[i])
        visible += 1
        i += 1
    return "".join(out)


def for_console(console: Console, env: Mapping[str, str], labels: Sequence[str]) -> Progress | None:
    """A status line for these jobs when the user watches a terminal, else None."""
    if isinstance(console, BufferConsole) or console.quiet or not live_terminal(console.err, env):
        return None
    return Progress(console.err, labels, colour=colour_enabled(console.err, env))
