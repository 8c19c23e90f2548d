"""The one planner: BUILD_DEPENDS in upstream's rounds, and the job graph every request
runs through (autoinstall, build/install over kernels, match, plan --build, host events)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dkms_hooks.model.jobs import Job
from dkms_hooks.transaction.planner import build_order, graph


def test_rounds_and_what_never_becomes_ready() -> None:
    # events: a dependency outside the set is the build's own business
    deps = {"a": ["b"], "b": [], "c": ["a", "x"]}
    assert build_order(deps, lambda d: d not in deps) == (["b", "a", "c"], [])
    cyc = {"a": ["b"], "b": ["a"], "c": []}
    assert build_order(cyc, lambda d: d not in cyc) == (["c"], ["a", "b"])
    # autoinstall: only what is installed counts; an unknown dependency keeps its module back
    assert build_order({"a": ["b"], "b": [], "c": ["x"]}, {"y"}.__contains__) == (["b", "a"], ["c"])
    # rounds, not depth-first: everything ready now comes before what it unblocks
    assert build_order({"top": ["mid"], "mid": ["base"], "base": [], "solo": []}, lambda d: False)[0] == [
        "base", "solo", "mid", "top"]


def test_graph_needs_and_shared_build_directories() -> None:
    jobs = [Job("base", "1", "k1", "x"), Job("top", "1", "k1", "x"), Job("base", "1", "k2", "x"),
            Job("top", "1", "k2", "x")]
    depends = {"top": ["base"], "base": []}
    own = graph(jobs, lambda j: depends[j.module], lambda j: j.module == "base")
    # top needs base on its own kernel only
    assert own.needs == (frozenset(), frozenset({0}), frozenset(), frozenset({2}))
    # base builds in a directory per kernel; top shares one, so its kernels take turns
    assert own.after == (frozenset(), frozenset(), frozenset(), frozenset({1}))
    assert own.repeats_modules and own.deps(3) == {1, 2}
    single = graph(jobs[:2], lambda j: depends[j.module], lambda j: 1 / 0)  # not asked: no module repeats
    assert not single.repeats_modules and single.after == (frozenset(), frozenset())


@given(st.dictionaries(st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdefxy"), max_size=3), max_size=6))
@settings(deadline=None)  # pure and fast; a loaded CI machine must not turn a pause into a failure
def test_every_placed_module_comes_after_what_it_needs(deps: dict[str, list[str]]) -> None:
    order, left = build_order(deps, lambda d: d not in deps)
    assert sorted(order + left) == sorted(deps)
    for i, m in enumerate(order):
        assert all(d not in deps or d in order[:i] for d in deps[m])
    # what is left is left for a reason: each waits on something left too
    assert all(any(d in left for d in deps[m]) for m in left)
