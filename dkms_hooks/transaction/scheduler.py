"""Run many (module, kernel) jobs at once inside one job budget.

The budget is GNU make's jobserver: a pipe holding budget-1 tokens. Every running job holds
one token (the first job the implicit one), and every make is a jobserver client of the same
pipe, so however many modules and kernels are being built, no more than `budget` compiler
processes run, and none waits while a token is free. Each job writes into its own buffer;
buffers are printed whole, in the order a serial run would have printed them, so the output
stays readable and, for upstream's verbs, identical to upstream's."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from dkms_hooks.system.console import BufferConsole, Console
from dkms_hooks.system.errors import EXIT_INTERNAL

if TYPE_CHECKING:
    from dkms_hooks.system.progress import Progress

J = TypeVar("J")


class JobServer:
    def __init__(self, budget: int) -> None:
        self.budget = max(budget, 1)
        self.read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self.read_fd, True)
        os.set_inheritable(self.write_fd, True)
        # make switches the shared pipe between blocking and non-blocking as it likes: our
        # own reads go through an open file of our own, always non-blocking, so a token
        # another reader took between select and read never leaves us stuck in read()
        try:
            self._ours = os.open(f"/proc/self/fd/{self.read_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._ours = self.read_fd
        if self.budget > 1:
            os.write(self.write_fd, b"+" * (self.budget - 1))

    def acquire(self, wake_fd: int | None = None) -> bool:
        """Take a token; True once one is taken. With ``wake_fd``, returns False as soon as
        that descriptor is readable instead (someone has news worth more than a token)."""
        watch = [self._ours] if wake_fd is None else [self._ours, wake_fd]
        while True:
            try:
                if os.read(self._ours, 1):
                    return True
            except BlockingIOError:
                pass
            ready, _, _ = select.select(watch, [], [], 1.0)
            if wake_fd is not None and wake_fd in ready:
                return False

    def release(self) -> None:
        os.write(self.write_fd, b"+")

    @property
    def makeflags(self) -> str:
        # both spellings: --jobserver-auth for make >= 4.2, --jobserver-fds before
        return f"-j{self.budget} --jobserver-auth={self.read_fd},{self.write_fd}"

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd, self._ours}:
            try:
                os.close(fd)
            except OSError:
                pass


def _any_failed(i: int, dep_results: Mapping[int, int | None]) -> bool:
    return any(r != 0 for r in dep_results.values())


@dataclass
class Slot(Generic[J]):
    job: J
    deps: set[int] = field(default_factory=set)
    console: BufferConsole | None = None
    result: int | None = None
    skipped: bool = False


def run_jobs(
    jobs: Sequence[J],
    deps: Callable[[int], set[int]],
    run_one: Callable[[J, BufferConsole], int],
    *,
    budget: int,
    console: Console,
    jobserver: JobServer,
    blocked: Callable[[int, Mapping[int, int | None]], bool] | None = None,
    on_done: Callable[[int, int], None] | None = None,
    progress: Progress | None = None,
) -> list[int | None]:
    """Run ``jobs`` (each after the jobs ``deps(i)`` names) at most ``budget`` at a time.
    Returns each job's exit code; None for a job not run because ``blocked(i, {dep: its
    code, None if it did not run})`` said so.
    ``progress`` (a terminal's status line) hears of every start and end."""
    if blocked is None:
        blocked = _any_failed
    slots = [Slot(j, deps(i)) for i, j in enumerate(jobs)]
    lock = threading.Condition()
    running = 0
    printed = 0
    implicit_free = True

    def flush_printable() -> None:
        nonlocal printed
        while printed < len(slots) and (slots[printed].result is not None or slots[printed].skipped):
            buf = slots[printed].console
            if buf is not None and buf.items:
                if progress is not None:
                    with progress.suspended():
                        buf.replay(console)
                else:
                    buf.replay(console)
            printed += 1

    def worker(i: int, implicit: bool) -> None:
        nonlocal running, implicit_free
        slot = slots[i]
        try:
            code = run_one(slot.job, slot.console or BufferConsole())
        except BaseException:  # the job runner reports its own errors; never lose a token
            code = EXIT_INTERNAL
        if on_done is not None:
            on_done(i, code)
        if progress is not None:
            progress.job_done(i, code)
        with lock:
            slot.result = code
            running -= 1
            if implicit:
                implicit_free = True
            else:
                jobserver.release()
            lock.notify_all()
            # the main loop may be waiting for a token rather than on the lock
            with contextlib.suppress(BlockingIOError):
                os.write(wake_w, b".")

    started: set[int] = set()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with lock:
            while True:
                flush_printable()
                if printed == len(slots) and running == 0:
                    break
                ready = []
                for i, s in enumerate(slots):
                    if i in started or s.skipped:
                        continue
                    if all(slots[d].result is not None or slots[d].skipped for d in s.deps):
                        dep_results = {d: None if slots[d].skipped else slots[d].result for d in s.deps}
                        if blocked(i, dep_results):
                            s.skipped = True
                            if progress is not None:
                                progress.job_done(i, None)
                            continue
                        ready.append(i)
                if not ready:
                    if running == 0:
                        # nothing runs and nothing can start: what is left waits on itself
                        for i, s in enumerate(slots):
                            if i not in started:
                                s.skipped = True
                                if progress is not None:
                                    progress.job_done(i, None)
                        continue
                    lock.wait()
                    continue
                i = ready[0]
                if implicit_free:
                    implicit_free = False
                    implicit = True
                elif running < budget:
                    lock.release()
                    try:
                        got = jobserver.acquire(wake_fd=wake_r)
                    finally:
                        lock.acquire()
                    if not got:  # a job ended (its implicit token may be free): look again
                        _drain(wake_r)
                        continue
                    implicit = False
                else:
                    lock.wait()
                    continue
                started.add(i)
                slots[i].console = BufferConsole(quiet=console.quiet)
                running += 1
                if progress is not None:
                    progress.job_started(i)
                threading.Thread(target=worker, args=(i, implicit), daemon=True).start()
    finally:
        if progress is not None:
            progress.close()
        os.close(wake_r)
        os.close(wake_w)
    return [None if s.skipped else s.result for s in slots]


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
