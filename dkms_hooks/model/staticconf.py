"""Read dkms.conf-style files that are nothing but plain assignments, without starting bash.

Most dkms.conf files (and most framework.conf files, which are all comments) only assign
quoted words and `$name` references. For those, what readconf.bash reports can be worked
out exactly here, saving a bash start per read: ~10 ms on every build, and one per module
and kernel in a transaction. Anything this reader is not certain to reproduce byte for byte
(command substitution, escapes, globs, arrays literals, unknown variables, CR line ends, ...)
makes `read` return None, and bash reads the files as before. tests/test_staticconf.py holds
every accepted file of the real-world corpus against bash's answer."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

#: name -> index -> value, as bashconf.Values
Values = dict[str, dict[int, str]]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ASSIGN = re.compile(rf"[ \t]*({_NAME})(?:\[(0|[1-9][0-9]{{0,8}})\])?=")
_REF = re.compile(rf"\$(?:({_NAME})|\{{({_NAME})\}})")
_UNQUOTED = re.compile(r"[A-Za-z0-9_./:,@%+=-]+")
_SPACE_OR_COMMENT = re.compile(r"[ \t]*(?:#.*)?")
# Inside double quotes: anything but what bash would expand or unescape there.
_DQ_TEXT = re.compile(r'[^"$`\\\x00-\x08\x0a-\x1f\x7f]+')
_SQ_TEXT = re.compile(r"'([^'\x00-\x08\x0a-\x1f\x7f]*)'")
# A value is echoed unquoted (word split, globbed) and evaluated again inside double quotes;
# values made only of these characters come through both unchanged, but for the whitespace.
_INERT = re.compile(r"[^$`\\\"*?\[\]()\x00-\x08\x0b-\x1f\x7f]*")
_IFS_RUN = re.compile(r"[ \t\n]+")

# Variables whose assignment changes how bash itself behaves (word splitting, globbing,
# locale) or that it refuses to assign; and readconf.bash's own variables.
_SHELL_NAMES = frozenset(
    "IFS GLOBIGNORE LANG POSIXLY_CORRECT SHELLOPTS BASHOPTS UID EUID PPID FUNCNAME GROUPS RANDOM "
    "SRANDOM SECONDS LINENO DIRSTACK PIPESTATUS HISTCMD OPTIND OPTARG PWD OLDPWD TMOUT PS4 "
    "EPOCHSECONDS EPOCHREALTIME HOSTNAME HOME PATH CDPATH ENV SHELL".split()
)


class _Decline(Exception):
    """The file needs bash."""


def _assignable(name: str) -> bool:
    return not (
        name in _SHELL_NAMES
        or name.startswith(("__", "BASH", "LC_", "DKMS_DIRECTIVE"))
    )


class _Reader:
    def __init__(self, state: Values, kept: frozenset[str]) -> None:
        self.state = state
        self.kept = kept

    def ref(self, name: str) -> str:
        if name in self.state:
            return self.state[name].get(0, "")
        if name in self.kept and _assignable(name):
            return ""  # unset before every file is sourced
        raise _Decline  # from the environment, or one of bash's own: let bash answer

    def word(self, line: str, pos: int) -> tuple[str, int]:
        """The value of an assignment starting at pos, and where it ends."""
        out: list[str] = []
        while pos < len(line) and line[pos] not in " \t":
            c = line[pos]
            if c == '"':
                end = pos + 1
                while end < len(line) and line[end] != '"':
                    if line[end] == "$":
                        m = _REF.match(line, end)
                        if m is None:
                            raise _Decline
                        out.append(self.ref(m.group(1) or m.group(2)))
                        end = m.end()
                        continue
                    m = _DQ_TEXT.match(line, end)
                    if m is None:
                        raise _Decline
                    out.append(m.group())
                    end = m.end()
                if end >= len(line):
                    raise _Decline  # continues on the next line
                pos = end + 1
            elif c == "'":
                m = _SQ_TEXT.match(line, pos)
                if m is None:
                    raise _Decline
                out.append(m.group(1))
                pos = m.end()
            elif c == "$":
                m = _REF.match(line, pos)
                if m is None:
                    raise _Decline
                out.append(self.ref(m.group(1) or m.group(2)))
                pos = m.end()
            else:
                m = _UNQUOTED.match(line, pos)
                if m is None:
                    raise _Decline
                out.append(m.group())
                pos = m.end()
        return "".join(out), pos

    def source(self, text: str) -> None:
        for line in text.split("\n"):
            m = _ASSIGN.match(line)
            if m is None:
                if _SPACE_OR_COMMENT.fullmatch(line) is None:
                    raise _Decline
                continue
            name, index = m.group(1), int(m.group(2) or 0)
            if not _assignable(name):
                raise _Decline
            value, end = self.word(line, m.end())
            if _SPACE_OR_COMMENT.fullmatch(line, end) is None:
                raise _Decline  # a command, or more than one assignment
            self.state.setdefault(name, {})[index] = value


def read(
    files: Sequence[Path],
    names: Iterable[str],
    *,
    scope: Mapping[str, str],
    deprecated: Iterable[str],
    env: Mapping[str, str],
) -> tuple[Values, list[tuple[str, str, int, str]]] | None:
    """(values, deprecation records) exactly as readconf.bash would report them for these
    existing files, or None when only bash can tell."""
    kept = tuple(dict.fromkeys(names))
    if any(k.startswith("DKMS_DIRECTIVE") for k in (*env, *scope)):
        return None  # upstream turns such variables into directives while sourcing
    main: Values = {k: {0: v} for k, v in scope.items() if k not in kept}
    records: list[tuple[str, str, int, str]] = []
    try:
        for f in files:
            try:
                text = f.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError):
                return None
            if "\r" in text or "\0" in text:
                return None
            # the file is sourced in a subshell: only the kept names come back
            sub = _Reader({k: dict(v) for k, v in main.items()}, frozenset(kept))
            sub.source(text)
            for name in kept:
                for index in sorted(sub.state.get(name, {})):
                    value = sub.state[name][index]
                    if _INERT.fullmatch(value) is None:
                        return None
                    main.setdefault(name, {})[index] = _IFS_RUN.sub(" ", value)
            for name in deprecated:
                elements = main.get(name, {})
                records.append((str(f), name, len(elements), elements.get(0, "")))
    except _Decline:
        return None
    values = {name: dict(sorted(main[name].items())) for name in kept if main.get(name)}
    return values, records
