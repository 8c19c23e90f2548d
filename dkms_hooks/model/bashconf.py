"""Run readconf.bash and decode what it reports.

A pure-Python shell parser cannot read real dkms.conf files: a third of them use command
substitution, loops, functions or `source`. So bash reads them, exactly as upstream does,
unless they are plain assignments that staticconf can answer for without it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dkms_hooks.model import staticconf
from dkms_hooks.system import run

_SCRIPT = Path(__file__).with_name("readconf.bash")
_empty_dir: str | None = None

#: name -> index -> value; a scalar is index 0
Values = dict[str, dict[int, str]]


def _empty_cwd() -> str:
    # Files are sourced from an empty directory, so a stray glob in a value never matches
    # the caller's files and the result does not depend on where dkms was started.
    global _empty_dir
    if _empty_dir is None or not os.path.isdir(_empty_dir):
        _empty_dir = tempfile.mkdtemp(prefix="dkms-hooks-cwd.")
        atexit.register(shutil.rmtree, _empty_dir, True)
    return _empty_dir


@dataclass(frozen=True)
class Deprecation:
    file: str
    name: str
    count: int
    first: str


@dataclass
class SourceResult:
    values: Values = field(default_factory=dict)
    deprecations: list[Deprecation] = field(default_factory=list)

    def scalar(self, name: str) -> str:
        return self.values.get(name, {}).get(0, "")


def source_files(
    files: Sequence[Path],
    names: Iterable[str],
    *,
    scope: Mapping[str, str],
    deprecated: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> SourceResult:
    existing = [f for f in files if f.exists()]
    if not existing:
        return SourceResult()
    names = list(names)
    deprecated = list(deprecated)
    plain = staticconf.read(existing, names, scope=scope, deprecated=deprecated,
                            env=os.environ if env is None else env)
    if plain is not None:
        run.debug(f"+ (plain assignments, read without bash) {' '.join(map(os.fspath, existing))}")
        values, records = plain
        return SourceResult(values, [Deprecation(*r) for r in records])
    return source_with_bash(existing, names, scope=scope, deprecated=deprecated, env=env)


def source_with_bash(
    existing: Sequence[Path],
    names: Iterable[str],
    *,
    scope: Mapping[str, str],
    deprecated: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> SourceResult:
    fd, out = tempfile.mkstemp(prefix="dkms-hooks-conf.")
    os.close(fd)
    try:
        argv: list[str] = ["bash", os.fspath(_SCRIPT), out, " ".join(names), " ".join(deprecated)]
        argv.append(str(len(scope)))
        for k, v in scope.items():
            argv += [k, v]
        argv.append("--")
        argv += [os.fspath(f) for f in existing]
        run.run(argv, cwd=_empty_cwd(), env=env, stdout=None)
        raw = Path(out).read_bytes()
    finally:
        os.unlink(out)
    return _decode(raw)


def _decode(raw: bytes) -> SourceResult:
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    result = SourceResult()
    i = 0
    while i < len(fields) - 1:
        tag = fields[i]
        if tag == "V":
            name, idx, value = fields[i + 1 : i + 4]
            result.values.setdefault(name, {})[int(idx)] = value
            i += 4
        elif tag == "D":
            f, name, count, first = fields[i + 1 : i + 5]
            result.deprecations.append(Deprecation(f, name, int(count), first))
            i += 5
        else:
            raise ValueError(f"unexpected record {tag!r} from readconf.bash")
    return result
