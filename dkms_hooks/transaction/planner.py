"""Requests into one job graph. Whatever asks for work (``dkms autoinstall``, ``dkms install
-k A -k B``, ``kernel_postinst``, ``plan --build``, a host event), the jobs are ordered the same
way: BUILD_DEPENDS in upstream's rounds, a module's jobs for several kernels one after
another unless each builds in a directory of its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dkms_hooks.model.jobs import Job


def build_order(depends: Mapping[str, Sequence[str]],
                satisfied: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """The modules in upstream's rounds (each round: what the earlier rounds and
    ``satisfied`` make ready, in the given order), and those that never become ready (a
    dependency that is not met, or a cycle)."""
    placed: set[str] = set()
    order: list[str] = []
    pending = list(depends)
    while True:
        ready = [m for m in pending if all(d in placed or satisfied(d) for d in depends[m])]
        if not ready:
            return order, pending
        order += ready
        placed.update(ready)
        pending = [m for m in pending if m not in placed]


@dataclass(frozen=True)
class Graph:
    jobs: tuple[Job, ...]
    #: per job: the jobs it needs (its BUILD_DEPENDS on its kernel); one that failed stops it
    needs: tuple[frozenset[int], ...]
    #: per job: the jobs it only waits for (the same module, sharing one build directory)
    after: tuple[frozenset[int], ...]

    def deps(self, i: int) -> set[int]:
        return set(self.needs[i] | self.after[i])

    @property
    def repeats_modules(self) -> bool:
        """Whether a module is built for several kernels (each then in a directory of its
        own where its dkms.conf allows)."""
        return len({j.module for j in self.jobs}) < len(self.jobs)

    def first_to_build(self, built: Callable[[Job], bool]) -> int | None:
        return next((i for i, j in enumerate(self.jobs) if not built(j)), None)


def graph(jobs: Sequence[Job], depends: Callable[[Job], Sequence[str]],
          own_build_dir: Callable[[Job], bool]) -> Graph:
    """``jobs`` already in order (BUILD_DEPENDS first on each kernel). ``own_build_dir`` is
    asked only for modules built for more than one kernel."""
    repeated = {m for m in (j.module for j in jobs) if sum(1 for k in jobs if k.module == m) > 1}
    own = [j.module in repeated and own_build_dir(j) for j in jobs]
    needs: list[frozenset[int]] = []
    after: list[frozenset[int]] = []
    for i, job in enumerate(jobs):
        wanted = set(depends(job))
        needs.append(frozenset(k for k in range(i) if jobs[k].kver == job.kver and jobs[k].module in wanted))
        after.append(frozenset(k for k in range(i) if jobs[k].module == job.module and not (own[i] and own[k])))
    return Graph(tuple(jobs), tuple(needs), tuple(after))
